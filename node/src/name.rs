//! Validation of recipe names and contents, shared by the server and clients.

/// Longest accepted recipe name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Checks that `name` is 1 to 256 bytes of printable UTF-8.
///
/// The error is a sentence a user can act on.
pub fn validate(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("recipe name must not be empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "recipe name is {} bytes long; the limit is {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!(
            "recipe name contains the control character U+{:04X} at byte {at}; names must be printable",
            c as u32
        ));
    }
    Ok(())
}

/// Checks that `content` fits in `limit` bytes.
pub fn validate_content(content: &[u8], limit: usize) -> Result<(), String> {
    if content.len() > limit {
        return Err(format!(
            "recipe content is {} bytes; the limit is {limit} bytes",
            content.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printable_names_up_to_the_limit() {
        assert!(validate("rice_eggburger").is_ok());
        assert!(validate("crème brûlée / 2").is_ok());
        assert!(validate(&"a".repeat(MAX_NAME_BYTES)).is_ok());
    }

    #[test]
    fn rejects_empty_overlong_and_control_names() {
        assert!(validate("").unwrap_err().contains("empty"));
        assert!(
            validate(&"a".repeat(MAX_NAME_BYTES + 1))
                .unwrap_err()
                .contains("257 bytes")
        );
        // A multi-byte name over the limit in bytes but not in characters.
        assert!(validate(&"é".repeat(129)).is_err());
        assert!(validate("tab\there").unwrap_err().contains("U+0009"));
        assert!(validate("nul\0").unwrap_err().contains("U+0000"));
        assert!(validate("del\u{7f}").is_err());
    }

    #[test]
    fn content_limit_is_inclusive() {
        assert!(validate_content(&[0; 10], 10).is_ok());
        assert!(
            validate_content(&[0; 11], 10)
                .unwrap_err()
                .contains("11 bytes")
        );
    }
}
