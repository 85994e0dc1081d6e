// The system layer's types (SystemError, UnixSocket, PeerCredentials,
// EventFD) appear in IVServer's API: users of IVServer see them too.
@_exported import LinuxSystem
