import LarderBuildInfo

/// The version of this Larder build.
public enum LarderVersion {
    /// The release number, which agents send the control plane when they say hello.
    public static let number = "0.1.0"
    /// The git revision the release build stamped in (`deploy/release/build`), or `unknown` for development builds.
    public static let revision = String(cString: larder_build_revision())
    /// `0.1.0 (revision 0123abcd4567)`, as printed by every binary's `--version`.
    public static var description: String { "\(number) (revision \(revision))" }
}
