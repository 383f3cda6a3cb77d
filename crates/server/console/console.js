// The Rivulet console: polls /_rivulet/api/streams once a second, turns metric totals into
// per-second rates, and draws them; lists queues from /_rivulet/api/queues and channels from
// /_rivulet/api/channels; reads records of a shard through /_rivulet/api/records;
// shows alarms from /_rivulet/alarms. Plain DOM and canvas: nothing to build.
"use strict";

const POINTS = 120; // two minutes of one-second samples
const state = {
  selected: null, // "account/name"
  previous: new Map(), // key → { at, totals }
  history: new Map(), // key → { series name → number[] }
  browse: { key: null, shard: null, next: null, timer: null },
};

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
};

function pushPoint(key, name, value) {
  let series = state.history.get(key);
  if (!series) state.history.set(key, (series = {}));
  const points = (series[name] ||= []);
  points.push(value);
  if (points.length > POINTS) points.shift();
  return points;
}

function rates(key, totals, now) {
  const before = state.previous.get(key);
  state.previous.set(key, { at: now, totals });
  if (!before) return null;
  const seconds = Math.max((now - before.at) / 1000, 0.001);
  const rate = {};
  for (const [name, value] of Object.entries(totals)) {
    rate[name] = name === "IteratorAgeMilliseconds"
      ? value
      : Math.max(0, (value - (before.totals[name] || 0)) / seconds);
  }
  return rate;
}

function draw(canvas, lines) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const all = lines.flatMap((l) => l.points);
  const max = Math.max(1, ...all);
  ctx.strokeStyle = "#e4e7eb";
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = 10 + ((height - 20) * i) / 4;
    ctx.beginPath(); ctx.moveTo(40, y); ctx.lineTo(width, y); ctx.stroke();
    ctx.fillText(formatNumber(max * (1 - i / 4)), 2, y + 4);
  }
  for (const line of lines) {
    ctx.strokeStyle = line.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    line.points.forEach((v, i) => {
      const x = 40 + ((width - 42) * (i + POINTS - line.points.length)) / (POINTS - 1);
      const y = 10 + (height - 20) * (1 - v / max);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  const last = lines[0].points.at(-1) ?? 0;
  canvas.dataset.last = String(last);
  canvas.dataset.max = String(Math.max(0, ...lines[0].points));
  canvas.title = lines.map((l) => `${l.label}: ${formatNumber(l.points.at(-1) ?? 0)}`).join(", ");
}

function formatNumber(v) {
  if (v >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function renderStreams(streams, now) {
  const body = $("streams").querySelector("tbody");
  body.replaceChildren();
  $("no-streams").hidden = streams.length > 0;
  for (const s of streams) {
    const key = `${s.account}/${s.name}`;
    const rate = rates(key, s.totals, now);
    const inPerSecond = rate ? rate.IncomingRecords : 0;
    pushPoint(key, "in", rate ? rate.IncomingRecords : 0);
    pushPoint(key, "out", rate ? rate.OutgoingRecords : 0);
    pushPoint(key, "bytesIn", rate ? rate.IncomingBytes : 0);
    pushPoint(key, "bytesOut", rate ? rate.OutgoingBytes : 0);
    pushPoint(key, "writeThrottled", rate ? rate.WriteProvisionedThroughputExceeded : 0);
    pushPoint(key, "readThrottled", rate ? rate.ReadProvisionedThroughputExceeded : 0);
    pushPoint(key, "age", s.totals.IteratorAgeMilliseconds || 0);
    for (const shard of s.shards) {
      if (!shard.totals) continue;
      const shardKey = `${key}/${shard.id}`;
      const shardRate = rates(shardKey, shard.totals, now);
      pushPoint(shardKey, "in", shardRate ? shardRate.IncomingRecords : 0);
      pushPoint(shardKey, "out", shardRate ? shardRate.OutgoingRecords : 0);
      pushPoint(shardKey, "bytesIn", shardRate ? shardRate.IncomingBytes : 0);
      pushPoint(shardKey, "bytesOut", shardRate ? shardRate.OutgoingBytes : 0);
      pushPoint(shardKey, "writeThrottled", shardRate ? shardRate.WriteProvisionedThroughputExceeded : 0);
      pushPoint(shardKey, "readThrottled", shardRate ? shardRate.ReadProvisionedThroughputExceeded : 0);
      pushPoint(shardKey, "age", shard.totals.IteratorAgeMilliseconds || 0);
    }
    const row = el("tr", { class: "stream" + (key === state.selected ? " selected" : ""), "data-stream": s.name },
      el("td", {}, s.name),
      el("td", {}, el("span", { class: `badge ${s.status}` }, s.status)),
      el("td", {}, s.mode),
      el("td", { title: s.on_demand ? `on-demand: peak ${s.on_demand.peak_shards.toFixed(2)} shards' worth of writes in 30 days, scaling towards ${s.on_demand.target_shards}` : "" },
        s.on_demand && s.on_demand.target_shards !== s.open_shards
          ? `${s.open_shards} → ${s.on_demand.target_shards}` : `${s.open_shards}`),
      el("td", {}, `${s.retention_hours} h`),
      el("td", {}, s.encryption),
      el("td", {}, formatNumber(inPerSecond)));
    row.onclick = () => select(key);
    body.append(row);
  }
  if (!state.selected && streams.length) select(`${streams[0].account}/${streams[0].name}`);
}

function select(key) {
  if (state.selected !== key) {
    state.selected = key;
    stopFollowing();
    $("records").querySelector("tbody").replaceChildren();
  }
  refresh();
}

function renderStream(s) {
  $("stream-panel").hidden = !s;
  if (!s) return;
  const key = `${s.account}/${s.name}`;
  $("stream-title").textContent = `${s.name}`;
  $("stream-arn").textContent = `${s.arn} · ${s.mode} · ${s.status}${s.encryption === "KMS" ? " · encrypted" : ""}`;
  const h = state.history.get(key) || {};
  draw($("chart-records"), [
    { label: "in", color: "#2b7bd6", points: h.in || [] },
    { label: "out", color: "#e07b24", points: h.out || [] },
  ]);
  draw($("chart-bytes"), [
    { label: "in", color: "#2b7bd6", points: h.bytesIn || [] },
    { label: "out", color: "#e07b24", points: h.bytesOut || [] },
  ]);
  draw($("chart-throttles"), [
    { label: "write", color: "#2b7bd6", points: h.writeThrottled || [] },
    { label: "read", color: "#e07b24", points: h.readThrottled || [] },
  ]);
  draw($("chart-age"), [{ label: "age", color: "#2b7bd6", points: h.age || [] }]);

  // Shard map: one row per generation of shards, placed by hash range.
  const map = $("shard-map");
  map.replaceChildren();
  const rows = [];
  for (const shard of s.shards) {
    let row = rows.find((r) => r.every((o) => o.end <= shard.start || o.start >= shard.end));
    if (!row) rows.push((row = []));
    row.push(shard);
  }
  for (const row of rows) {
    const line = el("div", { class: "shard-row" });
    for (const shard of row) {
      const left = (shard.start * 100).toFixed(3);
      const width = Math.max(((shard.end - shard.start) * 100), 0.5).toFixed(3);
      const label = shard.id.replace("shardId-", "#") + (shard.parents.length ? ` ← ${shard.parents.map((p) => p.replace("shardId-", "#")).join(" + ")}` : "");
      const box = el("div", { class: `shard ${shard.open ? "open" : "closed"}`, "data-shard": shard.id, title: `${shard.id} ${shard.open ? "open" : "closed"}${shard.parents.length ? ", from " + shard.parents.join(" and ") : ""}` }, label);
      box.style.left = `${left}%`;
      box.style.width = `${width}%`;
      line.append(box);
    }
    map.append(line);
  }

  // Per-shard charts, for shards with enhanced monitoring.
  const shardCharts = $("shard-charts");
  shardCharts.replaceChildren();
  for (const shard of s.shards.filter((x) => x.totals)) {
    const sh = state.history.get(`${key}/${shard.id}`) || {};
    const charts = [
      ["records/s", [["in", "#2b7bd6", sh.in], ["out", "#e07b24", sh.out]]],
      ["bytes/s", [["in", "#2b7bd6", sh.bytesIn], ["out", "#e07b24", sh.bytesOut]]],
      ["throttled/s", [["write", "#2b7bd6", sh.writeThrottled], ["read", "#e07b24", sh.readThrottled]]],
      ["iterator age ms", [["age", "#2b7bd6", sh.age]]],
    ];
    for (const [title, lines] of charts) {
      const canvas = el("canvas", { width: 220, height: 80, "data-shard": shard.id });
      shardCharts.append(el("figure", {}, el("figcaption", {}, `${shard.id} ${title}`), canvas));
      draw(canvas, lines.map(([label, color, points]) => ({ label, color, points: points || [] })));
    }
  }

  const consumers = $("consumers").querySelector("tbody");
  consumers.replaceChildren();
  $("no-consumers").hidden = s.consumers.length > 0;
  for (const c of s.consumers) {
    consumers.append(el("tr", {},
      el("td", {}, c.name),
      el("td", {}, c.millis_behind == null ? "—" : `${formatNumber(c.millis_behind)} ms`),
      el("td", {}, c.seen_ms == null ? "no subscription yet" : new Date(c.seen_ms).toLocaleTimeString())));
  }

  const shardSelect = $("browse-shard");
  const wanted = s.shards.map((x) => x.id);
  if ([...shardSelect.options].map((o) => o.value).join() !== wanted.join()) {
    const current = shardSelect.value;
    shardSelect.replaceChildren(...wanted.map((id) => el("option", { value: id }, id)));
    if (wanted.includes(current)) shardSelect.value = current;
  }
}

function decode(base64, how) {
  if (how === "base64") return base64;
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  if (how === "auto") {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON */ }
  }
  return text;
}

async function browse(fromStart) {
  const [account, stream] = splitKey(state.selected);
  const shard = $("browse-shard").value;
  const params = new URLSearchParams({ account, stream, shard, limit: "100" });
  const b = state.browse;
  if (fromStart || b.shard !== shard || b.key !== state.selected || !b.next) {
    params.set("position", $("browse-position").value);
    $("records").querySelector("tbody").replaceChildren();
  } else {
    params.set("position", "AFTER_SEQUENCE_NUMBER");
    params.set("sequence", b.next);
  }
  b.key = state.selected;
  b.shard = shard;
  const response = await fetch(`/_rivulet/api/records?${params}`);
  const answer = await response.json();
  if (!response.ok) {
    $("records").querySelector("tbody").append(el("tr", {}, el("td", { colSpan: 4 }, `${answer.__type}: ${answer.message}`)));
    return;
  }
  const body = $("records").querySelector("tbody");
  for (const r of answer.records) {
    body.append(el("tr", { "data-sequence": r.sequence_number },
      el("td", { class: "seq" }, r.sequence_number),
      el("td", {}, new Date(r.arrival_ms).toISOString()),
      el("td", {}, r.partition_key),
      el("td", { class: "data" }, decode(r.data, $("browse-decode").value))));
    b.next = r.sequence_number;
  }
  if (!answer.records.length && params.get("position") === "LATEST") b.next = null;
}

function stopFollowing() {
  clearInterval(state.browse.timer);
  state.browse.timer = null;
  state.browse.next = null;
  $("browse-follow").checked = false;
}

function splitKey(key) {
  const at = key.indexOf("/");
  return [key.slice(0, at), key.slice(at + 1)];
}

function renderAlarms(alarms) {
  const body = $("alarms").querySelector("tbody");
  body.replaceChildren();
  $("no-alarms").hidden = alarms.length > 0;
  for (const a of alarms) {
    const dims = Object.entries(a.dimensions).map(([k, v]) => `${k}=${v}`).join(", ");
    body.append(el("tr", { "data-alarm": a.alarm_name },
      el("td", {}, a.alarm_name),
      el("td", {}, el("span", { class: `badge ${a.state}` }, a.state)),
      el("td", {}, `${a.metric_name} (${dims})`),
      el("td", {}, `${a.statistic} ${a.comparison_operator} ${a.threshold}, ${a.evaluation_periods} × ${a.period} s`),
      el("td", { class: "muted" }, a.reason)));
  }
}

function formatAge(ms) {
  if (!ms) return "–";
  if (ms >= 3600e3) return (ms / 3600e3).toFixed(1) + " h";
  if (ms >= 60e3) return (ms / 60e3).toFixed(1) + " min";
  return (ms / 1e3).toFixed(1) + " s";
}

function renderQueues(queues, now) {
  const body = $("queues").querySelector("tbody");
  body.replaceChildren();
  $("no-queues").hidden = queues.length > 0;
  for (const q of queues) {
    const rate = rates(`queue:${q.arn}`, q.totals, now) || {};
    body.append(el("tr", { "data-queue": q.name },
      el("td", { title: q.arn }, q.name),
      el("td", {}, q.stream),
      el("td", {}, formatNumber(q.visible)),
      el("td", {}, formatNumber(q.in_flight)),
      el("td", {}, formatNumber(q.dead)),
      el("td", {}, formatAge(q.oldest_age_ms)),
      el("td", {}, formatNumber(rate.receives || 0)),
      el("td", {}, formatNumber(rate.acknowledgements || 0)),
      el("td", {}, formatNumber(rate.redeliveries || 0))));
  }
}

function renderChannels(channels, now) {
  const body = $("channels").querySelector("tbody");
  body.replaceChildren();
  $("no-channels").hidden = channels.length > 0;
  for (const c of channels) {
    const rate = rates(`channel:${c.arn}`, c.totals, now) || {};
    body.append(el("tr", { "data-channel": c.name },
      el("td", { title: c.arn }, c.name),
      el("td", {}, c.stream),
      el("td", {}, c.destination),
      el("td", { title: c.reason || "" }, c.status),
      el("td", {}, formatAge(c.lag_ms)),
      el("td", {}, formatNumber(rate.records || 0)),
      el("td", {}, formatNumber(c.totals.records)),
      el("td", {}, formatNumber(c.totals.dead_letters)),
      el("td", {}, formatNumber(c.totals.failures))));
  }
}

async function refresh() {
  try {
    const [streams, alarms, queues, channels] = await Promise.all([
      fetch("/_rivulet/api/streams").then((r) => r.json()),
      fetch("/_rivulet/alarms").then((r) => r.json()),
      fetch("/_rivulet/api/queues").then((r) => r.json()),
      fetch("/_rivulet/api/channels").then((r) => r.json()),
    ]);
    const now = streams.now_ms;
    $("clock").textContent = new Date(now).toLocaleTimeString();
    // Cluster mode: the node that answered (its totals are the cluster's).
    $("node").textContent = streams.node
      ? `cluster node ${streams.node}${streams.leader ? " (leader)" : ""}`
      : "";
    renderStreams(streams.streams, now);
    renderQueues(queues.queues ?? [], now);
    renderChannels(channels.channels ?? [], now);
    const selected = streams.streams.find((s) => `${s.account}/${s.name}` === state.selected);
    if (!selected) state.selected = null;
    renderStream(selected);
    // Under --auth sigv4 a principal without cloudwatch:DescribeAlarms gets a 403 here.
    renderAlarms(alarms.alarms ?? []);
    if (alarms.__type) $("no-alarms").textContent = `${alarms.__type}: ${alarms.message}`;
    document.body.dataset.ready = "true";
  } catch (error) {
    $("clock").textContent = `not reachable: ${error}`;
  }
}

$("browse-start").onclick = () => browse(true);
$("browse-follow").onchange = (e) => {
  clearInterval(state.browse.timer);
  state.browse.timer = e.target.checked ? setInterval(() => browse(false), 1000) : null;
  if (e.target.checked) browse(!state.browse.next);
};
refresh();
setInterval(refresh, 1000);
