//! Expiring HMAC-SHA256 signatures for blob URLs and export tokens, so that a browser can fetch an image
//! without the API key and the link stops working after it expires.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies `(subject, expiry)` pairs with a server secret.
#[derive(Clone)]
pub struct UrlSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(..)")
    }
}

impl UrlSigner {
    /// A signer over `secret`.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self { secret: secret.as_ref().to_vec() }
    }

    fn mac(&self, subject: &str, expires: i64) -> HmacSha256 {
        // new_from_slice only fails for algorithms with a fixed key size, which HMAC is not.
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!("HMAC takes any key size"));
        mac.update(subject.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// Hex signature of `subject` valid until `expires` (unix seconds).
    pub fn sign(&self, subject: &str, expires: i64) -> String {
        hex::encode(self.mac(subject, expires).finalize().into_bytes())
    }

    /// True when `sig` is the signature of `subject` and `expires` is not past `now` (unix seconds).
    pub fn verify(&self, subject: &str, expires: i64, sig: &str, now: i64) -> bool {
        if expires < now {
            return false;
        }
        let Ok(raw) = hex::decode(sig) else { return false };
        self.mac(subject, expires).verify_slice(&raw).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_until_expiry_only() {
        let s = UrlSigner::new(b"secret");
        let sig = s.sign("projects/a/b", 100);
        assert!(s.verify("projects/a/b", 100, &sig, 99));
        assert!(!s.verify("projects/a/b", 100, &sig, 101));
        assert!(!s.verify("projects/a/c", 100, &sig, 99));
        assert!(!s.verify("projects/a/b", 101, &sig, 99));
        assert!(!UrlSigner::new(b"other").verify("projects/a/b", 100, &sig, 99));
        assert!(!s.verify("projects/a/b", 100, "zz", 99));
    }
}
