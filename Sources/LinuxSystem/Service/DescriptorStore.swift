/// Where a server puts the fds that must outlive its process, by name, so
/// that the next process of the same service gets them back (a service
/// manager's fd store; a test's recording of one).
public protocol DescriptorStore: AnyObject {
    /// Puts each fd in the store under its name; the names that could not be stored.
    func store(_ items: [(name: String, fd: Int32)]) -> [String]
    /// Takes the fds stored under `name` out of the store.
    func remove(name: String)
}

/// The service manager's fd store (FDSTORE=1), through NOTIFY_SOCKET.
public final class ServiceManagerStore: DescriptorStore {
    public init() {}
    public func store(_ items: [(name: String, fd: Int32)]) -> [String] { ServiceManager.store(items) }
    public func remove(name: String) { ServiceManager.removeStored(name: name) }
}
