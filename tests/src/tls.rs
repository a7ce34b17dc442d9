//! TLS on the test servers: a throwaway certificate authority, a server certificate it signed
//! for `127.0.0.1`, `::1` and `localhost` (so clients can verify the server, up to
//! `sslmode=verify-full`), `ssl = on`, and a role whose members may connect only over TLS.
//!
//! The certificates are made in-process with rcgen, so a fresh machine needs no `openssl`
//! program. A new authority is made for every cluster: nothing outside the cluster trusts it.

use std::os::unix::fs::{PermissionsExt as _, chown};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::cluster::Paths;
use crate::user::RunAs;

/// The role whose members may connect only over TLS, with their password: `hostssl` lines ask
/// them for it, and `hostnossl`/`local` lines reject them. A test puts a role of its own in it
/// (creating the group if it is missing, as for [`crate::PASSWORD_REQUIRED_ROLE`]).
pub const TLS_REQUIRED_ROLE: &str = "pglock_tls_required";

/// The authority's certificate, in the cluster's directory (readable by the tests).
const CA_FILE: &str = "ca.crt";

/// The authority's certificate of the cluster in `paths`.
pub(crate) fn ca_file(paths: &Paths) -> PathBuf {
    paths.dir.join(CA_FILE)
}

/// Make the authority and the server's certificate: `server.crt` and `server.key` in the data
/// directory (Postgres' default names, the key readable by the server's user alone) and the
/// authority's certificate next to the data directory.
///
/// # Panics
///
/// When a certificate cannot be made or written.
pub(crate) fn install_certificates(paths: &Paths, user: Option<&RunAs>) {
    let made = make().unwrap_or_else(|e| panic!("pglock-tests: cannot make certificates: {e}"));
    let write = |path: &Path, contents: &str, mode: u32, owner: Option<&RunAs>| {
        std::fs::write(path, contents)
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
            .and_then(|()| match owner {
                Some(user) => chown(path, Some(user.uid), Some(user.gid)),
                None => Ok(()),
            })
            .unwrap_or_else(|e| panic!("pglock-tests: cannot write {}: {e}", path.display()));
    };
    write(
        &paths.data.join("server.crt"),
        &made.server_cert,
        0o644,
        user,
    );
    write(
        &paths.data.join("server.key"),
        &made.server_key,
        0o600,
        user,
    );
    write(&ca_file(paths), &made.ca_cert, 0o644, None);
}

/// PEM texts.
struct Made {
    ca_cert: String,
    server_cert: String,
    server_key: String,
}

fn make() -> Result<Made, rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "pglock-tests throwaway CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let mut server = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "pglock-tests server");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &ca)?;
    Ok(Made {
        ca_cert: ca.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
    })
}

/// Put lines first in `pg_hba.conf` that let members of [`TLS_REQUIRED_ROLE`] in over TLS
/// with their password and turn them away otherwise.
pub(crate) fn require_tls(hba: &Path) {
    let rest = std::fs::read_to_string(hba)
        .unwrap_or_else(|e| panic!("pglock-tests: cannot read {}: {e}", hba.display()));
    let role = TLS_REQUIRED_ROLE;
    let lines = format!(
        "# pglock-tests: members of {role} connect over TLS only, with their password.\n\
         hostssl all +{role} 127.0.0.1/32 scram-sha-256\n\
         hostssl all +{role} ::1/128 scram-sha-256\n\
         hostnossl all +{role} all reject\n\
         local all +{role} reject\n"
    );
    std::fs::write(hba, lines + &rest)
        .unwrap_or_else(|e| panic!("pglock-tests: cannot write {}: {e}", hba.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_an_authority_and_a_server_certificate() {
        let made = make().unwrap();
        assert!(made.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(made.server_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(made.server_key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(made.ca_cert, made.server_cert);
    }
}
