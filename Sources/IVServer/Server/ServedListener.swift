import ServerCore

/// One of the server's listening sockets, with the names it is handed over under.
struct ServedListener {
    let socket: ListeningSocket
    /// `Handover.qemuListener` or `.clientListener`.
    let baseName: String
    /// The name it was handed over under, when it was.
    let handedName: String?
    /// The name a systemd socket unit handed it in under, when it did.
    var activatedName: String? = nil

    /// The name to hand it over under now: with its socket file's identity;
    /// a socket unit's keeps the unit's name, so that the next process
    /// (SIGUSR2's re-exec) tells it by its path again.
    var handoverName: String { activatedName ?? Handover.listenerName(baseName, file: socket.file.identity) }

    var storeEntry: Handover.ListenerEntry {
        Handover.ListenerEntry(name: handoverName, handedName: handedName, activated: activatedName != nil)
    }
}
