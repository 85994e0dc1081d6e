import LinuxSystem

/// The `vectors=` of the QEMU at the other end of the QEMU socket, from its
/// command line (/proc/PID/cmdline; see QemuCommandLine), read once per
/// process: a QEMU that reconnects (a chardev with reconnect=) is the same
/// process with the same command line, so while that process still runs
/// (its pidfd says so) the answer it gave stands. Reading procfs was the
/// largest cost of a VM's handshake after sending it.
package final class DoorbellVectorLookup {
    private let socketPath: String
    private var last: (process: RunningProcess, vectors: Int?)?

    package init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// Nil when the command line does not say (or cannot be read).
    package func vectors(ofProcess pid: Int32) -> Int? {
        if let last, last.process.pid == pid, last.process.isRunning { return last.vectors }
        last = nil
        // Held before reading: if it still runs afterwards, the pid meant
        // this process all along, and the answer is its own.
        let process = RunningProcess(pid: pid)
        guard let arguments = ProcFS.commandLine(of: pid) else { return nil }  // unreadable: ask again next time
        let vectors = QemuCommandLine.doorbellVectors(arguments: arguments, socketPath: socketPath)
        if let process, process.isRunning { last = (process, vectors) }
        return vectors
    }
}
