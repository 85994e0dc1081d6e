import LinuxSystem
import WireFormat

// The types IVClient's API takes and returns that other layers define:
// named here, so that `import IVClient` alone is enough to use the API
// (IVClient re-exports no module wholesale).

/// An fd a client owns (the region's eventfds, the shared memory).
public typealias OwnedFD = LinuxSystem.OwnedFD
/// The layout header read from the shared memory, and its parts.
public typealias LayoutHeader = WireFormat.LayoutHeader
public typealias RegionDescriptor = WireFormat.RegionDescriptor
public typealias SignalTableLayout = WireFormat.SignalTableLayout
/// Why a layout header is unusable (`IVClientError.Kind.badLayout`).
public typealias HeaderError = WireFormat.HeaderError
/// The host-client protocol's names and constants (`HALDProtocol.VMInfo`, the request names).
public typealias HALDProtocol = WireFormat.HALDProtocol
/// A failed system call (`IVClientError.Kind.system`): which call, what for, errno.
public typealias SystemError = LinuxSystem.SystemError
public typealias SystemCall = LinuxSystem.SystemCall
/// How a futex wait on a shared word ended (`RegionConnection.wait`).
public typealias FutexWaitResult = LinuxSystem.FutexWaitResult
