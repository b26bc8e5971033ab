/// The version of this Larder build.
public enum LarderVersion {
    /// The release number.
    public static let number = "0.1.0"
    /// `0.1.0`, as printed by every binary's `--version`.
    public static var description: String { number }
}
