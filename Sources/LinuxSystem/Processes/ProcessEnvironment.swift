import Glibc

/// This process's environment as "NAME=value" entries.
public enum ProcessEnvironment {
    public static var current: [String] {
        var entries: [String] = []
        var pointer = environ
        while let entry = pointer.pointee {
            entries.append(String(cString: entry))
            pointer += 1
        }
        return entries
    }
}
