import ServerCore
import LinuxSystem

/// The two eventfds of one region.
public final class RegionChannels {
    /// The guest rings it (Doorbell), host clients wait on it.
    public let guestToHost: OwnedFD
    /// Host clients ring it, QEMU turns it into the guest's vector.
    public let hostToGuest: OwnedFD

    public init() throws(SystemError) {
        guestToHost = try EventFD.create()
        hostToGuest = try EventFD.create()
    }

    /// The eventfds a previous server process of this VM made.
    init(takingOver guestToHost: OwnedFD, _ hostToGuest: OwnedFD) {
        self.guestToHost = guestToHost
        self.hostToGuest = hostToGuest
    }
}
