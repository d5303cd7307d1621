//! The per-method attributes of a service trait: `#[rpcd(idempotent)]` and
//! `#[rpcd(deadline = "2s")]`, checked at compile time.

use syn::{Attribute, LitStr};

/// What a method declares.
#[derive(Default)]
pub struct MethodAttrs {
    /// `#[rpcd(idempotent)]`: calls may run twice, so they may fail over.
    pub idempotent: bool,
    /// `#[rpcd(deadline = "...")]`, in milliseconds.
    pub deadline_ms: Option<u64>,
}

/// Reads every `#[rpcd(...)]` among `attrs`; misuse is an error spanned at the offending
/// tokens.
pub fn parse(attrs: &[Attribute]) -> syn::Result<MethodAttrs> {
    let mut out = MethodAttrs::default();
    let mut seen_idempotent = false;
    let mut seen_deadline = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("rpcd")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("idempotent") {
                if seen_idempotent {
                    return Err(meta.error("duplicate rpcd attribute `idempotent`"));
                }
                if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                    return Err(
                        meta.error("`idempotent` takes no value: write `#[rpcd(idempotent)]`")
                    );
                }
                seen_idempotent = true;
                out.idempotent = true;
                Ok(())
            } else if meta.path.is_ident("deadline") {
                if seen_deadline {
                    return Err(meta.error("duplicate rpcd attribute `deadline`"));
                }
                seen_deadline = true;
                let lit: LitStr = meta.value()?.parse()?;
                out.deadline_ms = Some(
                    parse_duration_ms(&lit.value())
                        .map_err(|why| syn::Error::new(lit.span(), why))?,
                );
                Ok(())
            } else {
                Err(meta.error(
                    "unknown rpcd attribute; the known ones are `idempotent` and \
                     `deadline = \"2s\"`",
                ))
            }
        })?;
    }
    Ok(out)
}

/// `"500ms"`, `"2s"`, `"1m"` → milliseconds: a whole number above zero and a unit.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "bad deadline {text:?}: write a whole number above zero and a unit, \
             `500ms`, `2s` or `1m`"
        )
    };
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        _ => return Err(bad()),
    };
    match number.checked_mul(scale) {
        Some(0) | None => Err(bad()),
        Some(ms) => Ok(ms),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations_in_ms_s_and_m() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2s"), Ok(2_000));
        assert_eq!(parse_duration_ms("1m"), Ok(60_000));
        for bad in [
            "",
            "2",
            "s",
            "0s",
            "2 s",
            "-1s",
            "1.5s",
            "2h",
            "2sec",
            "99999999999999999999m",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?}");
        }
    }
}
