//! What functions declare: `rpcctl describe`, `rpcctl list -l`, and the check of a call's
//! JSON arguments against the function's signature before anything is sent.
//!
//! All of it comes from the built-in `rpcd.describe` of the target daemon
//! (`docs/rpc-layer.md`), which answers a list of [`FunctionInfo`].

use std::collections::BTreeSet;
use std::fmt::Write as _;

use rpcd_client::conn::{CallOptions, Connection, RequestError};
use rpcd_client::ipc::{ErrorCode, FunctionInfo, Schema, Signature};
use serde_json::Value;

use crate::exit::{BadReply, Usage};
use crate::value;

/// Asks `target` what `function` (or, without one, every function) declares. The lookup
/// reads nothing but the registry, so it may fail over like an idempotent call.
pub fn fetch(
    conn: &Connection,
    target: &str,
    function: Option<&str>,
    deadline: Option<std::time::Duration>,
) -> Result<Vec<FunctionInfo>, anyhow::Error> {
    let args: Vec<Value> = function.map(Value::from).into_iter().collect();
    let mut opts = CallOptions::default();
    opts.deadline = deadline;
    opts.idempotent = true;
    let reply = conn.call(target, "rpcd.describe", value::encode_args(&args)?, opts)?;
    rmp_serde::from_slice(&reply).map_err(|err| {
        BadReply(format!(
            "rpcd.describe on {target} returned an unexpected reply: {err}"
        ))
        .into()
    })
}

/// Whether a failed lookup means "no signature to check against" (the daemon predates
/// `rpcd.describe`, the function is not there, the caller may not read the registry) rather
/// than "the target cannot be reached", which the call itself would meet too.
pub fn lookup_failure_is_benign(err: &anyhow::Error) -> bool {
    let Some(err) = err.downcast_ref::<RequestError>() else {
        return false;
    };
    matches!(
        err.code(),
        Some(
            ErrorCode::UnknownFunction
                | ErrorCode::AccessDenied
                | ErrorCode::BadRequest
                | ErrorCode::AppError
        )
    )
}

/// `rpcctl describe`'s text: one block per function, blank lines between.
pub fn text(infos: &[FunctionInfo]) -> String {
    let blocks: Vec<String> = infos.iter().map(block).collect();
    blocks.join("\n")
}

/// One function, like `grpcurl describe`:
///
/// ```text
/// kv.get is a function:
/// // The value of `key`, if any.
/// kv.get(key: string) -> option<string>
/// attributes: idempotent, deadline 2s
/// ```
fn block(info: &FunctionInfo) -> String {
    let mut out = String::new();
    if info.builtin {
        let _ = writeln!(
            out,
            "{} is a built-in function (no signature)",
            info.function
        );
        return out;
    }
    let Some(sig) = &info.signature else {
        let _ = writeln!(out, "{} is a function (no signature)", info.function);
        if let Some(attrs) = attributes(info) {
            let _ = writeln!(out, "attributes: {attrs}");
        }
        return out;
    };
    let _ = writeln!(out, "{} is a function:", info.function);
    for line in sig.doc.lines() {
        let _ = writeln!(out, "// {line}");
    }
    let _ = writeln!(out, "{}", signature_line(&info.function, sig));
    if let Some(attrs) = attributes(info) {
        let _ = writeln!(out, "attributes: {attrs}");
    }
    for def in definitions(sig) {
        let _ = writeln!(out, "{def}");
    }
    out
}

/// `rpcctl list -l`: one line per function.
pub fn long_list(infos: &[FunctionInfo]) -> String {
    let mut out = String::new();
    for info in infos {
        let head = match &info.signature {
            Some(sig) => signature_line(&info.function, sig),
            None if info.builtin => format!("{}  (built-in)", info.function),
            None => format!("{}  (no signature)", info.function),
        };
        match attributes(info) {
            Some(attrs) => {
                let _ = writeln!(out, "{head}  [{attrs}]");
            }
            None => {
                let _ = writeln!(out, "{head}");
            }
        }
    }
    out
}

/// `kv.incr(key: string) -> result<i64, string>`.
pub fn signature_line(function: &str, sig: &Signature) -> String {
    let args: Vec<String> = sig
        .args
        .iter()
        .map(|a| format!("{}: {}", a.name, a.ty))
        .collect();
    let returns = if sig.fallible {
        format!("result<{}, string>", sig.returns)
    } else {
        sig.returns.to_string()
    };
    format!("{function}({}) -> {returns}", args.join(", "))
}

/// `idempotent, deadline 2s`, or `not idempotent`; `None` when nothing is declared.
fn attributes(info: &FunctionInfo) -> Option<String> {
    let mut parts = Vec::new();
    match info.idempotent {
        Some(true) => parts.push("idempotent".to_owned()),
        Some(false) => parts.push("not idempotent".to_owned()),
        None => {}
    }
    if let Some(ms) = info.deadline_ms {
        parts.push(format!("deadline {}", duration_text(ms)));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `2000` → `2s`, `90000` → `90s`, `120000` → `2m`, `250` → `250ms`.
fn duration_text(ms: u64) -> String {
    if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// The structs and enums a signature mentions, each once, as one line.
fn definitions(sig: &Signature) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<&Schema> = sig.args.iter().map(|a| &a.ty).collect();
    stack.push(&sig.returns);
    while let Some(ty) = stack.pop() {
        match ty {
            Schema::List { of } | Schema::Option { of } => stack.push(of),
            Schema::Map { key, value } => {
                stack.push(key);
                stack.push(value);
            }
            Schema::Tuple { items } => stack.extend(items),
            Schema::Struct { name, fields } if seen.insert(name.clone()) => {
                let f: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.name, f.ty))
                    .collect();
                out.push(format!("struct {name} {{ {} }}", f.join(", ")));
                stack.extend(fields.iter().map(|f| &f.ty));
            }
            Schema::Enum { name, variants } if seen.insert(name.clone()) => {
                let v: Vec<String> = variants
                    .iter()
                    .map(|v| match &v.data {
                        None => v.name.clone(),
                        Some(Schema::Struct { fields, .. }) => {
                            let f: Vec<String> = fields
                                .iter()
                                .map(|f| format!("{}: {}", f.name, f.ty))
                                .collect();
                            format!("{} {{ {} }}", v.name, f.join(", "))
                        }
                        Some(data) => format!("{}({data})", v.name),
                    })
                    .collect();
                out.push(format!("enum {name} {{ {} }}", v.join(", ")));
                for v in variants {
                    match &v.data {
                        Some(Schema::Struct { fields, .. }) => {
                            stack.extend(fields.iter().map(|f| &f.ty));
                        }
                        Some(data) => stack.push(data),
                        None => {}
                    }
                }
            }
            _ => {}
        }
    }
    out.sort();
    out
}

/// Checks a call's JSON arguments against `function`'s signature; a mismatch names the
/// argument (and the field or element inside it) and is a usage error.
pub fn check_args(function: &str, sig: &Signature, args: &[Value]) -> Result<(), Usage> {
    if args.len() != sig.args.len() {
        let wanted: Vec<String> = sig
            .args
            .iter()
            .map(|a| format!("{}: {}", a.name, a.ty))
            .collect();
        return Err(Usage(format!(
            "{function} takes {} argument{} ({}), {} given",
            sig.args.len(),
            if sig.args.len() == 1 { "" } else { "s" },
            wanted.join(", "),
            args.len()
        )));
    }
    for (arg, value) in sig.args.iter().zip(args) {
        check(value, &arg.ty).map_err(|(path, why)| {
            Usage(format!("{function}: argument `{}{path}` {why}", arg.name))
        })?;
    }
    Ok(())
}

/// `Err((path inside the value, what is wrong))`.
fn check(value: &Value, ty: &Schema) -> Result<(), (String, String)> {
    let wrong = || Err((String::new(), format!("must be {ty}, not {}", shown(value))));
    let inside = |path: String, r: Result<(), (String, String)>| {
        r.map_err(|(rest, why)| (format!("{path}{rest}"), why))
    };
    match (ty, value) {
        (Schema::Opaque { .. } | Schema::Unknown, _) => Ok(()),
        (Schema::Unit, Value::Null) | (Schema::Bool, Value::Bool(_)) => Ok(()),
        (Schema::U8 | Schema::U16 | Schema::U32 | Schema::U64, Value::Number(n)) => {
            let max = match ty {
                Schema::U8 => u64::from(u8::MAX),
                Schema::U16 => u64::from(u16::MAX),
                Schema::U32 => u64::from(u32::MAX),
                _ => u64::MAX,
            };
            match n.as_u64() {
                Some(v) if v <= max => Ok(()),
                _ => wrong(),
            }
        }
        (Schema::I8 | Schema::I16 | Schema::I32 | Schema::I64, Value::Number(n)) => {
            let (min, max) = match ty {
                Schema::I8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
                Schema::I16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
                Schema::I32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
                _ => (i64::MIN, i64::MAX),
            };
            match n.as_i64() {
                Some(v) if (min..=max).contains(&v) => Ok(()),
                _ => wrong(),
            }
        }
        (Schema::F32 | Schema::F64, Value::Number(_)) => Ok(()),
        (Schema::String, Value::String(_)) => Ok(()),
        (Schema::Char, Value::String(s)) if s.chars().count() == 1 => Ok(()),
        (Schema::Bytes, Value::String(_)) => Ok(()),
        (Schema::Bytes, Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                inside(format!("[{i}]"), check(item, &Schema::U8))?;
            }
            Ok(())
        }
        (Schema::Option { .. }, Value::Null) => Ok(()),
        (Schema::Option { of }, v) => check(v, of),
        (Schema::List { of }, Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                inside(format!("[{i}]"), check(item, of))?;
            }
            Ok(())
        }
        (Schema::Tuple { items }, Value::Array(values)) if items.len() == values.len() => {
            for (i, (ty, v)) in items.iter().zip(values).enumerate() {
                inside(format!("[{i}]"), check(v, ty))?;
            }
            Ok(())
        }
        (Schema::Map { value: vty, .. }, Value::Object(map)) => {
            // JSON keys are strings: they are sent as such, whatever the key type.
            for (k, v) in map {
                inside(format!("[{k:?}]"), check(v, vty))?;
            }
            Ok(())
        }
        (Schema::Struct { fields, .. }, Value::Object(map)) => {
            for field in fields {
                match map.get(&field.name) {
                    Some(v) => inside(format!(".{}", field.name), check(v, &field.ty))?,
                    None if matches!(field.ty, Schema::Option { .. }) => {}
                    None => {
                        return Err((
                            String::new(),
                            format!("lacks the field `{}` ({})", field.name, field.ty),
                        ))
                    }
                }
            }
            if let Some(extra) = map.keys().find(|k| !fields.iter().any(|f| &f.name == *k)) {
                return Err((
                    String::new(),
                    format!("has a field `{extra}` that {ty} does not have"),
                ));
            }
            Ok(())
        }
        (Schema::Enum { variants, .. }, Value::String(s)) => {
            match variants.iter().find(|v| &v.name == s) {
                Some(v) if v.data.is_none() => Ok(()),
                _ => wrong(),
            }
        }
        (Schema::Enum { variants, .. }, Value::Object(map)) if map.len() == 1 => {
            let (name, data) = map.iter().next().expect("one entry");
            match variants.iter().find(|v| &v.name == name) {
                Some(v) => match &v.data {
                    Some(dty) => inside(format!(".{name}"), check(data, dty)),
                    None => wrong(),
                },
                None => wrong(),
            }
        }
        _ => wrong(),
    }
}

/// A JSON value for an error message: its kind and, when short, itself.
fn shown(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "null".into(),
        Value::Bool(_) => "the boolean",
        Value::Number(_) => "the number",
        Value::String(_) => "the string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let text = value.to_string();
    if text.len() <= 40 {
        format!("{kind} {text}")
    } else {
        kind.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcd_client::ipc::{Field, Variant};
    use serde_json::json;

    fn sig(args: Vec<(&str, Schema)>) -> Signature {
        Signature {
            args: args
                .into_iter()
                .map(|(n, ty)| Field { name: n.into(), ty })
                .collect(),
            ..Signature::default()
        }
    }

    #[test]
    fn a_mismatch_names_the_argument_and_the_place_inside_it() {
        let s = sig(vec![("key", Schema::String), ("value", Schema::String)]);
        assert!(check_args("kv.put", &s, &[json!("k"), json!("v")]).is_ok());
        let err = check_args("kv.put", &s, &[json!("k"), json!(5)]).unwrap_err();
        assert_eq!(
            err.0,
            "kv.put: argument `value` must be string, not the number 5"
        );
        let err = check_args("kv.put", &s, &[json!("k")]).unwrap_err();
        assert_eq!(
            err.0,
            "kv.put takes 2 arguments (key: string, value: string), 1 given"
        );
        let point = Schema::Struct {
            name: "Point".into(),
            fields: vec![
                Field {
                    name: "x".into(),
                    ty: Schema::I32,
                },
                Field {
                    name: "tags".into(),
                    ty: Schema::List {
                        of: Box::new(Schema::U8),
                    },
                },
            ],
        };
        let s = sig(vec![("p", point)]);
        assert!(check_args("f", &s, &[json!({"x": -1, "tags": [1, 2]})]).is_ok());
        let err = check_args("f", &s, &[json!({"x": 1, "tags": [1, 300]})]).unwrap_err();
        assert_eq!(
            err.0,
            "f: argument `p.tags[1]` must be u8, not the number 300"
        );
        let err = check_args("f", &s, &[json!({"tags": []})]).unwrap_err();
        assert_eq!(err.0, "f: argument `p` lacks the field `x` (i32)");
        let shape = Schema::Enum {
            name: "Shape".into(),
            variants: vec![
                Variant {
                    name: "Empty".into(),
                    data: None,
                },
                Variant {
                    name: "Circle".into(),
                    data: Some(Schema::F64),
                },
            ],
        };
        let s = sig(vec![
            ("s", shape),
            (
                "o",
                Schema::Option {
                    of: Box::new(Schema::Bool),
                },
            ),
        ]);
        assert!(check_args("f", &s, &[json!("Empty"), json!(null)]).is_ok());
        assert!(check_args("f", &s, &[json!({"Circle": 1.5}), json!(true)]).is_ok());
        assert!(check_args("f", &s, &[json!("Square"), json!(null)]).is_err());
        assert!(check_args("f", &s, &[json!("Empty"), json!(1)]).is_err());
    }

    #[test]
    fn long_list_lines() {
        let info = FunctionInfo {
            function: "kv.incr".into(),
            builtin: false,
            idempotent: Some(false),
            deadline_ms: Some(90_000),
            signature: Some(Signature {
                fallible: true,
                returns: Schema::I64,
                ..sig(vec![("key", Schema::String)])
            }),
        };
        assert_eq!(
            long_list(&[info]),
            "kv.incr(key: string) -> result<i64, string>  [not idempotent, deadline 90s]\n"
        );
    }
}
