import Glibc

/// The operating system's CA bundle, for `amqps://` without `tls_ca`.
///
/// rabbitmq-c loads no CA by default (it never calls OpenSSL's default
/// verify paths), so without a CA file every TLS handshake fails: warren
/// names the system bundle itself instead of reconnecting forever.
public enum SystemCABundle {
    /// Where distributions keep the bundle, Debian's first.
    public static let candidates = [
        "/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Alpine
        "/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // RHEL 7+
        "/etc/ssl/ca-bundle.pem",                            // openSUSE
        "/etc/ssl/cert.pem",                                 // Alpine, BSD
    ]
}

extension SystemCABundle {
    enum Lookup: Equatable {
        case found(String)
        /// Why none is usable, ending with what the operator should do.
        case missing(String)
    }

    /// `SSL_CERT_FILE` first, as OpenSSL's own default would; then the first
    /// readable candidate.
    static func find(sslCertFile: String?, candidates: [String]) -> Lookup {
        let advice = "set tls_ca to the CA file that signed the broker's certificate"
        if let sslCertFile, !sslCertFile.isEmpty {
            return access(sslCertFile, R_OK) == 0 ? .found(sslCertFile)
                : .missing("SSL_CERT_FILE names \(sslCertFile), which cannot be read; \(advice), or fix SSL_CERT_FILE")
        }
        if let path = candidates.first(where: { access($0, R_OK) == 0 }) { return .found(path) }
        return .missing("no system CA bundle was found (looked for \(candidates.joined(separator: ", "))); \(advice)")
    }
}
