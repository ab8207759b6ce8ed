//! What a recipe name and content may be: anything else is refused with
//! INVALID_ARGUMENT before it takes a queue slot.

/// Longest accepted recipe name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Why a recipe cannot be stored; each message is a sentence a user can
/// act on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecipe {
    #[error("recipe name must not be empty")]
    EmptyName,
    #[error("recipe name is {bytes} bytes long; the limit is {MAX_NAME_BYTES}")]
    NameTooLong { bytes: usize },
    #[error(
        "recipe name contains the control character U+{code:04X} at byte {at}; names must be printable"
    )]
    ControlCharacter { code: u32, at: usize },
    #[error("recipe content is {bytes} bytes; the limit is {limit} bytes")]
    ContentTooLarge { bytes: usize, limit: usize },
    #[error(
        "the request is {bytes} bytes, more than any recipe may be: recipe content is limited to {limit} bytes"
    )]
    RequestTooLarge { bytes: usize, limit: usize },
}

/// A refused recipe is the caller's mistake: INVALID_ARGUMENT.
impl From<InvalidRecipe> for tonic::Status {
    fn from(error: InvalidRecipe) -> Self {
        tonic::Status::invalid_argument(error.to_string())
    }
}

/// Checks that `name` is 1 to 256 bytes of printable UTF-8.
pub fn validate(name: &str) -> Result<(), InvalidRecipe> {
    if name.is_empty() {
        return Err(InvalidRecipe::EmptyName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(InvalidRecipe::NameTooLong { bytes: name.len() });
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(InvalidRecipe::ControlCharacter { code: c as u32, at });
    }
    Ok(())
}

/// Checks that `content` fits in `limit` bytes.
pub fn validate_content(content: &[u8], limit: usize) -> Result<(), InvalidRecipe> {
    if content.len() > limit {
        return Err(InvalidRecipe::ContentTooLarge {
            bytes: content.len(),
            limit,
        });
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
        assert_eq!(validate(""), Err(InvalidRecipe::EmptyName));
        assert!(
            validate(&"a".repeat(MAX_NAME_BYTES + 1))
                .unwrap_err()
                .to_string()
                .contains("257 bytes")
        );
        // A multi-byte name over the limit in bytes but not in characters.
        assert!(validate(&"é".repeat(129)).is_err());
        let tab = validate("tab\there").unwrap_err().to_string();
        assert!(tab.contains("U+0009") && tab.contains("byte 3"), "{tab}");
        assert!(
            validate("nul\0")
                .unwrap_err()
                .to_string()
                .contains("U+0000")
        );
        assert!(validate("del\u{7f}").is_err());
    }

    #[test]
    fn content_limit_is_inclusive() {
        assert!(validate_content(&[0; 10], 10).is_ok());
        assert!(
            validate_content(&[0; 11], 10)
                .unwrap_err()
                .to_string()
                .contains("11 bytes")
        );
    }
}
