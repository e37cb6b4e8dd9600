//! jsonwebtoken's cryptography, for the one algorithm tessera's tokens use: EdDSA (Ed25519).
//!
//! jsonwebtoken's bundled providers carry every JWS algorithm: RSA, ECDSA over two curves and
//! HMAC, with a big-integer library for RSA. Verifiers here accept EdDSA alone, so that code
//! could never run, yet every service would map it into memory (a third of a megabyte) and
//! carry RSA's timing advisory (RUSTSEC-2023-0071). This provider signs and verifies with
//! ed25519-dalek, which reads the keys already, and refuses every other algorithm.

use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use sha2::Digest as _;

static EDDSA_ONLY: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(ErrorKind::InvalidAlgorithm.into()),
        rsa_pub_components_from_public_key: |_| Err(ErrorKind::InvalidAlgorithm.into()),
        ec_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidAlgorithm.into()),
        ed_pub_components_from_private_key,
        compute_digest,
    },
};

/// Makes this provider the one jsonwebtoken uses in this process; called before any key is
/// used. A provider installed earlier by someone else stays: it can only add algorithms, and
/// the verifier admits EdDSA alone whatever the provider can do.
pub(crate) fn install() {
    let _ = EDDSA_ONLY.install_default();
}

fn signer_factory(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    if *algorithm != Algorithm::EdDSA || key.family() != AlgorithmFamily::Ed {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let key = SigningKey::from_pkcs8_der(key.as_bytes()).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(EdDsaSigner(key)))
}

fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if *algorithm != Algorithm::EdDSA || key.family() != AlgorithmFamily::Ed {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let bytes: &[u8; 32] = key
        .try_get_as_bytes()?
        .try_into()
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(EdDsaVerifier(key)))
}

fn ed_pub_components_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let key = SigningKey::from_pkcs8_der(der).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(key.verifying_key().as_bytes().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    Ok(match hash {
        ThumbprintHash::SHA256 => sha2::Sha256::digest(data).to_vec(),
        ThumbprintHash::SHA384 => sha2::Sha384::digest(data).to_vec(),
        ThumbprintHash::SHA512 => sha2::Sha512::digest(data).to_vec(),
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    })
}

struct EdDsaSigner(SigningKey);

impl signature::Signer<Vec<u8>> for EdDsaSigner {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(message).to_bytes().to_vec())
    }
}

impl JwtSigner for EdDsaSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct EdDsaVerifier(VerifyingKey);

impl signature::Verifier<Vec<u8>> for EdDsaVerifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), signature::Error> {
        // Strict: no malleable signatures, no small-order keys.
        self.0
            .verify_strict(message, &Signature::from_slice(signature)?)
    }
}

impl JwtVerifier for EdDsaVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Header, Validation};

    use super::*;

    fn keys() -> (EncodingKey, DecodingKey) {
        // Making a signing key installs the provider.
        let key = crate::SigningKey::generate("crypto-test");
        let jwk = key.public_jwk();
        (
            key.encoding_key().clone(),
            DecodingKey::from_jwk(&jwk).unwrap(),
        )
    }

    #[test]
    fn what_it_signs_it_verifies_and_a_changed_byte_fails() {
        let (encoding, decoding) = keys();
        let message = b"header.payload";
        let signature = jsonwebtoken::crypto::sign(message, &encoding, Algorithm::EdDSA).unwrap();
        assert!(
            jsonwebtoken::crypto::verify(&signature, message, &decoding, Algorithm::EdDSA).unwrap()
        );
        assert!(
            !jsonwebtoken::crypto::verify(
                &signature,
                b"header.payloaD",
                &decoding,
                Algorithm::EdDSA
            )
            .unwrap()
        );
    }

    #[test]
    fn every_other_algorithm_is_refused_with_an_error_not_a_panic() {
        let (encoding, decoding) = keys();
        let hmac = EncodingKey::from_secret(b"secret");
        for algorithm in [
            Algorithm::HS256,
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::PS512,
        ] {
            let signed = jsonwebtoken::encode(&Header::new(algorithm), &(), &hmac);
            assert!(signed.is_err(), "{algorithm:?} signed");
            assert!(jsonwebtoken::crypto::sign(b"m", &encoding, algorithm).is_err());
            assert!(jsonwebtoken::crypto::verify("AA", b"m", &decoding, algorithm).is_err());
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &serde_json::json!({}),
            &encoding,
        )
        .unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).is_ok());
    }

    #[test]
    fn thumbprints_are_the_rfc_7638_ones() {
        install();
        // RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
