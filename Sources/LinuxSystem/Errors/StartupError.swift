import Glibc

/// Why start-up cannot go on, naming the path: one line for the operator.
public struct StartupError: Error, Equatable, Sendable, CustomStringConvertible {
    public var path: String
    public var reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "\(path): \(reason)" }
}

extension StartupError {
    /// When `path`'s directory is missing, the error that says so (the
    /// system's "No such file or directory" names the file, not what is
    /// missing); nil when the directory is there.
    public static func missingDirectory(of path: String) -> StartupError? {
        let directory = path.lastIndex(of: "/").map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        // Only when stat says it is not there: any other failure is told by the call that made it.
        guard case .some(.none) = try? Posix.pathStatus(directory) else { return nil }
        return StartupError(path: directory, reason: "the directory does not exist, so \(path) cannot be made in it; "
            + "create it first (mkdir -p \(directory)) or give another path")
    }
}
