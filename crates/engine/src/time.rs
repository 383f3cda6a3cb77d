//! Calendar formatting for the few messages that print dates. The engine never reads the clock.

/// Formats epoch milliseconds as Java's `Date.toString()` in UTC: `Thu Jan 22 01:22:02 UTC 2015`.
pub fn java_date(epoch_ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = epoch_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        year
    )
}

/// Formats epoch milliseconds as ISO 8601 basic format, as SigV4 dates: `20150830T123600Z`.
pub fn iso_basic(epoch_ms: i64) -> String {
    iso(epoch_ms, "", "")
}

/// Formats epoch milliseconds as ISO 8601 extended format, as IAM's `aws:CurrentTime`:
/// `2015-08-30T12:36:00Z`.
pub fn iso_extended(epoch_ms: i64) -> String {
    iso(epoch_ms, "-", ":")
}

fn iso(epoch_ms: i64, date_sep: &str, time_sep: &str) -> String {
    let secs = epoch_ms.div_euclid(1000);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    format!(
        "{year:04}{date_sep}{month:02}{date_sep}{day:02}T{:02}{time_sep}{:02}{time_sep}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses ISO 8601 basic format (`20150830T123600Z`) to epoch milliseconds.
pub fn parse_iso_basic(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hh * 3_600 + mm * 60 + ss) * 1_000)
}

/// (year, month 1-12, day 1-31) to days since 1970-01-01; Howard Hinnant's algorithm.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31); Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_java() {
        // 2015-01-22T01:22:02Z, the example in AWS's ExpiredIteratorException message.
        assert_eq!(java_date(1_421_889_722_000), "Thu Jan 22 01:22:02 UTC 2015");
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(java_date(951_782_400_000), "Tue Feb 29 00:00:00 UTC 2000");
    }

    #[test]
    fn iso_basic_round_trips() {
        for text in ["20150830T123600Z", "20260101T000000Z", "20000229T235959Z"] {
            let ms = parse_iso_basic(text).expect("parses");
            assert_eq!(iso_basic(ms), text);
        }
        assert_eq!(parse_iso_basic("20150830T123600Z"), Some(1_440_938_160_000));
        assert_eq!(iso_extended(1_440_938_160_000), "2015-08-30T12:36:00Z");
        assert_eq!(parse_iso_basic("2015-08-30"), None);
        assert_eq!(parse_iso_basic("20151330T000000Z"), None);
    }
}
