import LarderBuildInfo

/// The version of this Larder build.
public enum LarderVersion {
    /// The release number, which agents send the control plane when they say hello.
    public static let number = "0.1.0"
    /// The git revision the release build stamped in (`deploy/release/build`), or `unknown` for development builds.
    public static let revision = String(cString: larder_build_revision())
    /// `0.1.0 (revision 0123abcd4567)`, as printed by every binary's `--version`.
    public static var description: String { "\(number) (revision \(revision))" }

    /// The major and minor numbers of a `MAJOR.MINOR.PATCH` release (a suffix such as `-rc1` is ignored);
    /// nil for other text, such as a custom build's name.
    public static func release(_ text: String) -> (major: Int, minor: Int)? {
        let parts = text.split(separator: ".", maxSplits: 2)
        guard parts.count == 3, let major = Int(parts[0]), let minor = Int(parts[1]), parts[2].first?.isNumber == true else { return nil }
        return (major, minor)
    }
}
