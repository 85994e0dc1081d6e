// The system layer's types (SystemError, PeerCredentials, OwnedFD) and the
// server core's (EventSink, EventLog, AccessPolicy, the service) appear in
// IVServer's API: users of IVServer see them too.
@_exported import LinuxSystem
@_exported import ServerCore
