//! TLS material named in the configuration, read and checked at load: an upstream's `ca_file`
//! (the certificates it trusts) and `server.tls` (the listener's chain and key), so that
//! `condenser check` and start-up fail naming the key instead of a handshake failing later.

use super::raw::RawTls;
use super::ConfigError;

/// The certificates of a PEM file, DER-encoded, each checked to parse as a trust anchor.
pub(super) fn read_certificates(path: &str) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path} is not a PEM file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no certificate"));
    }
    let mut store = pingora::tls::RootCertStore::empty();
    for cert in &certs {
        store
            .add(pingora::tls::CertificateDer::from(cert.clone()))
            .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(certs)
}

/// `server.tls`: both files must hold what they claim (checked here, so `condenser check` and
/// start-up fail naming the key rather than the listener failing later).
pub(super) fn validate_tls(
    raw: &RawTls,
) -> Result<(std::path::PathBuf, std::path::PathBuf), ConfigError> {
    let pem = std::fs::read(&raw.cert).map_err(|e| {
        ConfigError::invalid("server.tls.cert", format!("cannot read {}: {e}", raw.cert))
    })?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default();
    if chain.is_empty() {
        return Err(ConfigError::invalid(
            "server.tls.cert",
            format!("{} holds no PEM certificate", raw.cert),
        ));
    }
    let key = std::fs::read(&raw.key).map_err(|e| {
        ConfigError::invalid("server.tls.key", format!("cannot read {}: {e}", raw.key))
    })?;
    if !matches!(
        rustls_pemfile::private_key(&mut key.as_slice()),
        Ok(Some(_))
    ) {
        return Err(ConfigError::invalid(
            "server.tls.key",
            format!("{} holds no PEM private key", raw.key),
        ));
    }
    Ok((raw.cert.clone().into(), raw.key.clone().into()))
}
