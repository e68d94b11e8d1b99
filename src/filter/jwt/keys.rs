//! Verification keys, parsed once from an HMAC secret, a PEM public key or a JWK set (file or
//! URL). Keys are never taken from a token.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

/// One verification key.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) key: DecodingKey,
    /// The key's type: only algorithms of this family verify with it, so an RSA public key is
    /// never taken for an HMAC secret.
    pub(crate) family: AlgorithmFamily,
    /// The JWK's own `alg`, when it names one: then only that algorithm verifies with it.
    pub(crate) alg: Option<Algorithm>,
}

impl Key {
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|own| own == alg)
    }
}

/// A provider's keys at one moment. `version` changes whenever the keys do, so verifications
/// remembered under older keys are not served.
pub struct KeyRing {
    pub(crate) keys: Vec<Key>,
    pub(crate) version: u64,
}

impl KeyRing {
    pub fn from_secret(secret: &[u8]) -> KeyRing {
        KeyRing {
            keys: vec![Key {
                kid: None,
                key: DecodingKey::from_secret(secret),
                family: AlgorithmFamily::Hmac,
                alg: None,
            }],
            version: 0,
        }
    }

    /// An RSA, EC or Ed25519 public key in PEM.
    pub fn from_pem(pem: &[u8]) -> Option<KeyRing> {
        let (key, family) = DecodingKey::from_rsa_pem(pem)
            .map(|k| (k, AlgorithmFamily::Rsa))
            .or_else(|_| DecodingKey::from_ec_pem(pem).map(|k| (k, AlgorithmFamily::Ec)))
            .or_else(|_| DecodingKey::from_ed_pem(pem).map(|k| (k, AlgorithmFamily::Ed)))
            .ok()?;
        Some(KeyRing {
            keys: vec![Key {
                kid: None,
                key,
                family,
                alg: None,
            }],
            version: 0,
        })
    }

    /// A JWK set (RFC 7517). Keys meant for encryption, or of a type or algorithm not
    /// understood, are skipped; a set with no usable key is an error.
    pub(crate) fn from_jwks(bytes: &[u8], version: u64) -> Result<KeyRing, String> {
        let set: JwkSet =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                continue;
            }
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
                AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
                AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
                AlgorithmParameters::OctetKey(_) => AlgorithmFamily::Hmac,
                _ => continue,
            };
            let alg = match jwk.common.key_algorithm {
                None => None,
                Some(named) => match Algorithm::try_from(named) {
                    Ok(alg) if alg.family() == family => Some(alg),
                    _ => continue,
                },
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    key,
                    family,
                    alg,
                });
            }
        }
        if keys.is_empty() {
            return Err("holds no usable signature key".into());
        }
        Ok(KeyRing { keys, version })
    }

    /// Keys that may verify a token with this header: of the algorithm's family and, when
    /// the token names a `kid`, with that `kid` (keys without one are tried too).
    pub(crate) fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys.iter().filter(move |k| {
            k.fits(alg)
                && match (kid, &k.kid) {
                    (Some(wanted), Some(have)) => wanted == have,
                    _ => true,
                }
        })
    }

    /// Whether the token's `kid` is one this ring has never heard of: then a refetch of a
    /// remote key set may find it.
    pub(crate) fn lacks_kid(&self, kid: &str) -> bool {
        !self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}
