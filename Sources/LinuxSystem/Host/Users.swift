import Glibc

/// Users and groups, as the system knows them.
public enum Users {
    /// The id of a group given by name, if the system knows it.
    public static func groupID(named name: String) -> UInt32? {
        getgrnam(name).map { $0.pointee.gr_gid }
    }

    /// The real user id of this process.
    public static var currentUID: UInt32 { getuid() }
}
