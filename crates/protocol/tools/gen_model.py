#!/usr/bin/env python3
"""Generates crates/protocol/src/model_gen.rs from the Kinesis service model.

The protocol crate validates requests against the model's input shapes. Embedding the 300 KB
model and parsing it at start-up would cost memory and time on every start, so this script
extracts only what validation needs (input shape trees: kinds, members in model order, required
flags, min, max, pattern, enum values in the order AWS prints them) and whether each operation
has an output shape into compact static tables.

Usage (from anywhere; paths default relative to this file):
    python3 crates/protocol/tools/gen_model.py            # rewrite model_gen.rs
    python3 crates/protocol/tools/gen_model.py --check    # exit 1 if model_gen.rs is stale

Python 3.11 standard library only.
"""

import argparse
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
CRATE = HERE.parent
REPO = CRATE.parent.parent
DEFAULT_MODEL = REPO.parent / "shared" / "reference" / "kinesis-2013-12-02" / "service-2.json"
DEFAULT_OUT = CRATE / "src" / "model_gen.rs"

KINDS = {
    "structure": "Structure",
    "list": "List",
    "map": "Map",
    "string": "String",
    "integer": "Integer",
    "long": "Long",
    "double": "Double",
    "float": "Double",
    "boolean": "Boolean",
    "timestamp": "Timestamp",
    "blob": "Blob",
}

# Java's `.` does not match these line terminators; Rust's matches all but `\n`.
JAVA_DOT = r"[^\n\r\x{85}\x{2028}\x{2029}]"
# Java's predefined classes are ASCII-only by default; Rust's are Unicode-aware.
JAVA_CLASSES_OUTSIDE = {
    "d": "[0-9]",
    "D": "[^0-9]",
    "s": r"[\t\n\x0B\x0C\r ]",
    "S": r"[^\t\n\x0B\x0C\r ]",
    "w": "[a-zA-Z_0-9]",
    "W": "[^a-zA-Z_0-9]",
}
JAVA_CLASSES_INSIDE = {
    "d": "0-9",
    "s": r"\t\n\x0B\x0C\r ",
    "w": "a-zA-Z_0-9",
}


def translate_pattern(java):
    """Translates a Java regex from the model into an equivalent `regex`-crate pattern.

    Covers the constructs the model uses (classes, groups, alternation, counted repetition,
    anchors, escapes); anything else raises so a model update cannot silently change meaning.
    """
    out = []
    in_class = False
    i = 0
    while i < len(java):
        c = java[i]
        if c == "\\":
            if i + 1 >= len(java):
                raise ValueError(f"dangling escape in {java!r}")
            e = java[i + 1]
            i += 2
            table = JAVA_CLASSES_INSIDE if in_class else JAVA_CLASSES_OUTSIDE
            if e in table:
                out.append(table[e])
            elif e.isalnum():
                raise ValueError(f"unsupported escape \\{e} in {java!r}")
            else:
                # Escaped punctuation is a literal in Java; a hex escape is a literal everywhere
                # in Rust's syntax, inside or outside a class.
                out.append("\\x{%x}" % ord(e))
            continue
        if in_class:
            if c == "[":
                raise ValueError(f"nested class in {java!r}")
            if c == "]":
                in_class = False
            out.append(c)
        else:
            if c == "[":
                in_class = True
                out.append(c)
                if java[i + 1 : i + 2] == "^":
                    out.append("^")
                    i += 1
                # A `]` first in a class is a literal in both dialects.
            elif c == ".":
                out.append(JAVA_DOT)
            else:
                out.append(c)
        i += 1
    if in_class:
        raise ValueError(f"unterminated class in {java!r}")
    return "^(?:" + "".join(out) + ")$"


def java_string_hash(text):
    """Java's `String.hashCode()`: over UTF-16 code units, wrapping at 32 bits (unsigned here)."""
    h = 0
    units = text.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[i : i + 2], "big")) & 0xFFFFFFFF
    return h


def enum_print_order(values):
    """The order AWS prints an enum's value set in `ValidationException` messages.

    Not the model's order: ascending `String.hashCode() & 31`, and within one bucket the value
    later in the model first (the rule that fits every set recorded from the live service).
    """
    ranked = sorted(enumerate(values), key=lambda p: (java_string_hash(p[1]) & 31, -p[0]))
    return [value for _, value in ranked]


def lower_first(name):
    return name[:1].lower() + name[1:]


def rust_str(s):
    return json.dumps(s, ensure_ascii=True)


def field_str(indent, field, s):
    """A `field: "literal",` line, or a `concat!` of chunks when it would pass 100 columns."""
    line = f"{indent}{field}: {rust_str(s)},"
    if len(line) <= 100:
        return [line]
    chunks = [s[i : i + 60] for i in range(0, len(s), 60)]
    out = [f"{indent}{field}: concat!("]
    out += [f"{indent}    {rust_str(chunk)}," for chunk in chunks]
    out.append(f"{indent}),")
    return out


def collect(model):
    shapes = model["shapes"]
    reachable = set()

    def walk(name):
        if name in reachable:
            return
        reachable.add(name)
        shape = shapes[name]
        kind = shape["type"]
        if kind not in KINDS:
            raise ValueError(f"shape {name}: unsupported type {kind}")
        if kind == "structure":
            for member in shape["members"].values():
                walk(member["shape"])
        elif kind == "list":
            walk(shape["member"]["shape"])
        elif kind == "map":
            walk(shape["key"]["shape"])
            walk(shape["value"]["shape"])

    operations = sorted(model["operations"].values(), key=lambda o: o["name"])
    for op in operations:
        if "input" in op:
            walk(op["input"]["shape"])
    names = sorted(reachable)
    return operations, names


def bound(shape, key):
    value = shape.get(key)
    if value is None:
        return "None"
    if int(value) != value:
        raise ValueError(f"non-integer {key} {value}")
    return f"Some({int(value)})"


def generate(model):
    operations, names = collect(model)
    shapes = model["shapes"]
    ids = {name: i for i, name in enumerate(names)}
    patterns = sorted({shapes[n]["pattern"] for n in names if "pattern" in shapes[n]})
    pattern_ids = {p: i for i, p in enumerate(patterns)}

    imports = "Kind, Member, Operation, Pattern, Shape"
    if any("input" not in op for op in operations):
        imports = "Kind, Member, NO_SHAPE, Operation, Pattern, Shape"
    lines = [
        "// @generated by crates/protocol/tools/gen_model.py from",
        "// ../shared/reference/kinesis-2013-12-02/service-2.json -- do not edit by hand.",
        "// Regenerate: python3 crates/protocol/tools/gen_model.py",
        "// (a unit test runs it with --check and fails when this file is stale).",
        "",
        "use crate::model::{" + imports + "};",
        "",
        "/// Every operation of the model, sorted by name, with its input shape and whether it has",
        "/// an output shape (an operation without one answers an empty body).",
        f"pub(crate) static OPERATIONS: [Operation; {len(operations)}] = [",
    ]
    for op in operations:
        input_id = ids[op["input"]["shape"]] if "input" in op else "NO_SHAPE"
        output = str("output" in op).lower()
        line = f"    Operation {{ name: {rust_str(op['name'])}, input: {input_id}, output: {output} }},"
        if len(line) <= 100:
            lines.append(line)
        else:
            lines.append("    Operation {")
            lines.append(f"        name: {rust_str(op['name'])},")
            lines.append(f"        input: {input_id},")
            lines.append(f"        output: {output},")
            lines.append("    },")
    lines.append("];")
    lines.append("")
    lines.append("/// How many distinct patterns the input shapes use.")
    lines.append(f"pub(crate) const PATTERN_COUNT: usize = {len(patterns)};")
    lines.append("")
    lines.append("/// Every pattern of the input shapes: Java text and `regex`-crate form.")
    lines.append(f"pub(crate) static PATTERNS: [Pattern; PATTERN_COUNT] = [")
    for p in patterns:
        lines.append("    Pattern {")
        lines += field_str("        ", "java", p)
        lines += field_str("        ", "rust", translate_pattern(p))
        lines.append("    },")
    lines.append("];")
    lines.append("")
    lines.append("/// Every shape reachable from an operation input, sorted by name; ids index it.")
    lines.append(f"pub(crate) static SHAPES: [Shape; {len(names)}] = [")
    for name in names:
        shape = shapes[name]
        kind = shape["type"]
        lo, hi = bound(shape, "min"), bound(shape, "max")
        lines.append(f"    // {ids[name]}")
        head = "    Shape::"
        if kind == "structure":
            required = set(shape.get("required", []))
            unknown = required - set(shape["members"])
            if unknown:
                raise ValueError(f"shape {name}: required members {unknown} not declared")
            lines.append(f"{head}structure({rust_str(name)}, &[")
            for member_name, member in shape["members"].items():
                wire = member.get("jsonName", member.get("locationName", member_name))
                req = str(member_name in required).lower()
                args = [rust_str(wire), rust_str(lower_first(member_name))]
                args += [str(ids[member["shape"]]), req]
                line = f"        Member::new({', '.join(args)}),"
                if len(line) <= 100:
                    lines.append(line)
                else:
                    lines.append("        Member::new(")
                    lines += [f"            {arg}," for arg in args]
                    lines.append("        ),")
            lines.append("    ]),")
        elif kind == "list":
            element = ids[shape["member"]["shape"]]
            lines.append(f"{head}list({rust_str(name)}, {lo}, {hi}, {element}),")
        elif kind == "map":
            key, value = ids[shape["key"]["shape"]], ids[shape["value"]["shape"]]
            lines.append(f"{head}map({rust_str(name)}, {lo}, {hi}, {key}, {value}),")
        elif kind == "string":
            pattern = f"Some({pattern_ids[shape['pattern']]})" if "pattern" in shape else "None"
            enum = enum_print_order(shape.get("enum", []))
            line = f"{head}string({rust_str(name)}, {lo}, {hi}, {pattern}, &["
            if not enum:
                lines.append(line + "]),")
            else:
                lines.append(line)
                for value in enum:
                    lines.append(f"        {rust_str(value)},")
                lines.append("    ]),")
        else:
            lines.append(f"{head}scalar({rust_str(name)}, Kind::{KINDS[kind]}, {lo}, {hi}),")
    lines.append("];")
    lines.append("")
    for line in lines:
        if len(line) > 100:
            raise ValueError(f"generated line longer than 100 columns: {line}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=pathlib.Path, default=DEFAULT_MODEL)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="fail if --out is not current")
    args = parser.parse_args()

    with open(args.model, encoding="utf-8") as f:
        model = json.load(f)
    text = generate(model)
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run python3 {pathlib.Path(__file__)}", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
