//! A strict reader of the Prometheus text exposition format (version 0.0.4), as the
//! metrics test checks `/metrics` bodies with it: every line `# HELP`, `# TYPE` or a
//! sample; names, labels, escapes and values well formed; a family's `TYPE` at most once
//! and before its samples, its samples together; no series twice; each histogram's
//! buckets ascending in `le` and cumulative, ending at `+Inf` equal to `_count`, with a
//! `_sum`.

use std::collections::{HashMap, HashSet};

/// One sample: its name, labels (values as written, unescaped) and value.
type Sample = (String, Vec<(String, String)>, f64);

/// One histogram series: its buckets (le, count), its count, whether it has a sum.
type Histogram = (Vec<(f64, f64)>, Option<f64>, bool);

/// A body that passed the checks.
#[derive(Debug)]
pub struct Exposition {
    samples: Vec<Sample>,
}

/// A float label value (`le`, `quantile`) as the checker compares it.
pub fn go_float(v: f64) -> String {
    v.to_string()
}

impl Exposition {
    /// Check `text` strictly; the error names the line.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        if !text.ends_with('\n') {
            return Err("the body does not end with a newline".into());
        }
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helps: HashSet<String> = HashSet::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut seen: HashSet<String> = HashSet::new();
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let value = parts.next();
                match kind {
                    "HELP" => {
                        if !metric_name(name) || !helps.insert(name.to_owned()) {
                            return Err(err("bad or repeated HELP"));
                        }
                        let help = value.unwrap_or("");
                        if unescape(help, false).is_none() {
                            return Err(err("bad escape in HELP"));
                        }
                    }
                    "TYPE" => {
                        let t = value.unwrap_or("");
                        if !metric_name(name)
                            || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t)
                            || types.insert(name.to_owned(), t.to_owned()).is_some()
                            || seen.iter().any(|s| family_of(s, &types) == name)
                        {
                            return Err(err("bad, repeated or late TYPE"));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                if line.trim().is_empty() {
                    return Err(err("empty line"));
                }
                continue;
            }
            let (name, labels, value) = sample(line).ok_or_else(|| err("bad sample"))?;
            let family = family_of(&name, &types);
            if !types.contains_key(&family) {
                return Err(err("sample of an undeclared family"));
            }
            if current.as_deref() != Some(family.as_str()) {
                if let Some(c) = current.take() {
                    finished.insert(c);
                }
                if finished.contains(&family) {
                    return Err(err("the family's samples are not together"));
                }
                current = Some(family.clone());
            }
            let mut names = HashSet::new();
            if !labels.iter().all(|(k, _)| names.insert(k.clone())) {
                return Err(err("a label twice"));
            }
            let key = series_key(&name, &labels);
            if !seen.insert(key) {
                return Err(err("a series twice"));
            }
            if types[&family] == "counter" && (value.is_nan() || value < 0.0) {
                return Err(err("a counter below zero"));
            }
            samples.push((name, labels, value));
        }
        let e = Exposition { samples };
        e.check_histograms(&types)?;
        Ok(e)
    }

    fn check_histograms(&self, types: &HashMap<String, String>) -> Result<(), String> {
        for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
            // By label set without `le`: the buckets in order, then the count and sum.
            let mut series: HashMap<String, Histogram> = HashMap::new();
            for (name, labels, v) in &self.samples {
                let rest: Vec<(String, String)> =
                    labels.iter().filter(|(k, _)| k != "le").cloned().collect();
                let entry = series.entry(series_key("", &rest)).or_default();
                if *name == format!("{family}_bucket") {
                    let le = labels
                        .iter()
                        .find(|(k, _)| k == "le")
                        .and_then(|(_, v)| parse_float(v))
                        .ok_or_else(|| format!("{family}: a bucket without a numeric le"))?;
                    entry.0.push((le, *v));
                } else if *name == format!("{family}_count") {
                    entry.1 = Some(*v);
                } else if *name == format!("{family}_sum") {
                    entry.2 = true;
                }
            }
            for (labels, (buckets, count, sum)) in series {
                if buckets.is_empty() && count.is_none() && !sum {
                    continue;
                }
                let ordered = buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
                let last = buckets.last().copied();
                if !ordered
                    || last.map(|(le, _)| le) != Some(f64::INFINITY)
                    || last.map(|(_, n)| n) != count
                    || !sum
                {
                    return Err(format!(
                        "{family}{labels}: buckets {buckets:?}, count {count:?}, sum {sum}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Samples in all.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Samples named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.samples.iter().filter(|(n, _, _)| n == name).count()
    }

    /// The value of the series `name` with exactly `labels` (`le` and `quantile` compared
    /// as numbers).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let same = |k: &str, a: &str, b: &str| match k {
            "le" | "quantile" => parse_float(a).is_some() && parse_float(a) == parse_float(b),
            _ => a == b,
        };
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && same(k, lv, v)))
            })
            .map(|(_, _, v)| *v)
    }

    /// The value of the series whose key (`name{k=v,...}`, labels sorted, values as
    /// written) is `key`.
    pub fn by_key(&self, key: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| series_key(n, l) == key)
            .map(|(_, _, v)| *v)
    }
}

/// `name{k=v,...}` with the labels sorted.
fn series_key(name: &str, labels: &[(String, String)]) -> String {
    let mut l: Vec<&(String, String)> = labels.iter().collect();
    l.sort();
    let l: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", l.join(","))
}

/// The family a sample belongs to: its name, or a histogram's or summary's name for
/// `_bucket`, `_count` and `_sum`.
fn family_of(name: &str, types: &HashMap<String, String>) -> String {
    for suffix in ["_bucket", "_count", "_sum"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || (t == "summary" && suffix != "_bucket"))
            {
                return base.to_owned();
            }
        }
    }
    name.to_owned()
}

fn metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `\\`, `\n` and (in label values) `\"` undone; any other escape is an error.
fn unescape(s: &str, quotes: bool) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            '"' if quotes => out.push('"'),
            _ => return None,
        }
    }
    Some(out)
}

/// `name{labels} value [timestamp]`.
fn sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if !metric_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut s = after;
        loop {
            if let Some(r) = s.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = s.find('=')?;
            let key = &s[..eq];
            if !label_name(key) {
                return None;
            }
            s = s[eq + 1..].strip_prefix('"')?;
            // The value runs to the first quote not escaped.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in s.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    (false, '\n') => return None,
                    _ => {}
                }
            }
            let end = end?;
            labels.push((key.to_owned(), unescape(&s[..end], true)?));
            s = &s[end + 1..];
            if let Some(r) = s.strip_prefix(',') {
                s = r;
            } else if !s.starts_with('}') {
                return None;
            }
        }
    }
    let mut fields = rest.strip_prefix(' ')?.split(' ');
    let value = parse_float(fields.next()?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some((name.to_owned(), labels, value))
}

#[test]
fn the_checker_rejects_what_the_format_forbids() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\"} 1\n\
              # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    let e = Exposition::parse(ok).expect("valid");
    assert_eq!(e.value("a_total", &[("x", "q\"\\\n")]), Some(1.0));
    assert_eq!(e.value("h_bucket", &[("le", "0.10")]), Some(1.0));
    for bad in [
        "a 1",                                                      // no final newline
        "a 1\n",                                                    // undeclared
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",                   // label twice
        "# TYPE a gauge\na 1\na 2\n",                               // series twice
        "# TYPE a gauge\na{x=\"\\q\"} 1\n",                         // bad escape
        "# TYPE a gauge\na{1x=\"1\"} 1\n",                          // bad label name
        "# TYPE a gauge\na one\n",                                  // bad value
        "# TYPE a gauge\n# TYPE a gauge\na 1\n",                    // TYPE twice
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 1\n", // not together
        "# TYPE a counter\na -1\n",                                 // counter below zero
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",
        "# TYPE a gauge\n\na 1\n", // empty line
    ] {
        assert!(Exposition::parse(bad).is_err(), "accepted {bad:?}");
    }
}
