// Generated from VERSION by `make version`; a test checks they agree.
/// The version of ivserver, for --version, the .deb and the man page.
public enum IVServerVersion {
    public static let string = "0.1.0"
}
