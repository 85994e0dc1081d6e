// The system layer's and the wire format's types appear in IVClient's API
// (OwnedFD, FutexWaitResult, LayoutHeader, HALDProtocol.VMInfo): users of
// IVClient see them too.
@_exported import LinuxSystem
@_exported import WireFormat
