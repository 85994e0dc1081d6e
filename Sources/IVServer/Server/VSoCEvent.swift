import EventLoop
import LinuxSystem
import ServerCore
import WireFormat

/// What the vSoC server reports as it runs (its shared events are
/// ServerCore's CoreEvent).
public enum VSoCEvent: LogEvent {
    indirect case ready(VSoCServerConfiguration)
    /// A new VM: its handshake is out; `reset` is what its region's
    /// signalling state held before it was made fresh (nil: it could not be).
    case vmConnected(peer: PeerCredentials?, reset: [SignallingReset.Found]?)
    /// The new VM's signalling state could not be reset.
    case signallingResetFailed(peer: PeerCredentials?, error: String)
    case vmDisconnected(peer: PeerCredentials?, reason: String)
    case vmRefused(peer: PeerCredentials?, current: PeerCredentials?)
    /// A peer on the QEMU socket was gone before its handshake went out:
    /// it never was the VM.
    case vmLeftBeforeHandshake(peer: PeerCredentials?, reason: String)
    /// The VM's connection, handed over across a restart, is served on.
    case vmTakenOver(peer: PeerCredentials?)
    /// Start-up took over what a previous server process of this VM handed
    /// over (the service manager's store, a re-exec) instead of making anything.
    case tookOver(sharedMemoryInode: UInt64, eventFDs: Int, listeners: Int, vm: PeerCredentials?)
    /// The service manager did not take an fd for its store.
    case storeFailed(name: String)
    /// A handed fd that is neither the server's own nor a listener it serves on: closed.
    case handedFDIgnored(name: String, reason: String)
    /// After a re-exec under `launch`: the VM started before is watched on.
    case vmWatched(pid: Int32)
    /// SIGUSR2: the server execs its binary, handing over its fds.
    case reexecuting
    /// The re-exec did not happen; the server goes on as it was.
    case reexecFailed(reason: String)
    /// QEMU's command line gives its device `vectors` interrupt vectors,
    /// not one per region.
    case vmVectorMismatch(peer: PeerCredentials?, vectors: Int, regions: Int, deadRegions: [String])
    case clientServed(region: String, index: Int, peer: PeerCredentials?)
    case clientRefused(reason: String, peer: PeerCredentials?)
    /// `ivserver launch` started the VM.
    case vmLaunched(pid: Int32, command: [String])
    /// A stop signal was passed on to the launched VM.
    case vmSignalled(pid: Int32, signal: Int32, timeoutMilliseconds: UInt64)
    /// The launched VM did not exit in time and was killed.
    case vmKilled(pid: Int32)
    /// The launched VM ended; the server stops with it.
    case vmExited(pid: Int32, termination: Termination)

    public var severity: Severity {
        switch self {
        case .ready, .vmConnected, .vmDisconnected, .vmLeftBeforeHandshake, .vmTakenOver, .tookOver, .vmWatched, .reexecuting, .clientServed, .vmLaunched, .vmSignalled, .vmExited: return .info
        case .vmRefused, .vmVectorMismatch, .clientRefused, .vmKilled: return .warning
        case .signallingResetFailed, .storeFailed, .reexecFailed: return .error
        case .handedFDIgnored: return .warning
        }
    }

    public func appendMessage(to text: inout LogText) {
        switch self {
        case let .ready(configuration):
            let layout = configuration.layout
            text.append("ready: \(layout.regionCount) regions, shared memory \(configuration.sharedMemoryPath) "
                + "(\(layout.size) bytes, layout from \(configuration.layoutSource)); "
                + "QEMU socket \(configuration.qemuSocketPath); client socket \(configuration.clientSocketPath); "
                + "attach a VM with: \(configuration.qemuArguments.joined(separator: " "))")
        case let .vmConnected(peer, reset):
            text.append("VM connected ("); text.append(peer); text.append("); handshake sent")
            if let reset {
                text.append("; its signalling state starts clean: ")
                if reset.allSatisfy(\.isClean) {
                    text.append("nothing was left by a previous VM")
                } else {
                    text.append("reset "); text.append(SignallingReset.describe(reset))
                }
            }
        case let .signallingResetFailed(peer, error):
            text.append("could not reset the signalling state for the VM (\(describe(peer))): \(error); "
                + "what a previous VM left (a pending interrupt) may swallow its first interrupts")
        case let .vmDisconnected(peer, reason):
            text.append("VM disconnected ("); text.append(peer); text.append("): ")
            text.append(reason); text.append("; waiting for the next VM")
        case let .vmRefused(peer, current):
            text.append("refused a second VM connection (\(describe(peer))): the VM of \(describe(current)) is still connected")
        case let .vmLeftBeforeHandshake(peer, reason):
            text.append("a peer ("); text.append(peer); text.append(") connected to the QEMU socket and was gone before its handshake went out (")
            text.append(reason); text.append("): it was not attached; waiting for a VM")
        case let .vmTakenOver(peer):
            text.append("VM still attached ("); text.append(peer); text.append("): serving it on without a new handshake")
        case let .tookOver(inode, eventFDs, listeners, vm):
            text.append("resumed what the previous server process handed over: shared memory inode \(inode), \(eventFDs) eventfds, "
                + "\(listeners) listening socket(s), " + (vm.map { "the VM's connection (pid \($0.pid))" } ?? "no VM attached"))
        case let .storeFailed(name):
            text.append("could not put \(name) in the service manager's fd store (is FileDescriptorStoreMax= set?): "
                + "a restart now would separate the VM from its host clients")
        case let .handedFDIgnored(name, reason):
            text.append("closed a handed-in fd (\(name)): \(reason); check the socket unit's ListenStream= against --qemu-sock and --client-sock")
        case let .vmWatched(pid):
            text.append("the VM (pid \(pid)) this process started before it executed itself again runs on: watching it")
        case .reexecuting:
            text.append("SIGUSR2: executing the binary again in place, handing over the shared memory, the eventfds, "
                + "the sockets and the VM's connection")
        case let .reexecFailed(reason):
            text.append("could not execute the binary again (\(reason)); still serving as before")
        case let .vmVectorMismatch(peer, vectors, regions, dead) where vectors < regions:
            text.append("QEMU (\(describe(peer))) has ivshmem-doorbell vectors=\(vectors) but the layout has \(regions) regions: "
                + "regions \(vectors)...\(regions - 1) (\(dead.joined(separator: ", "))) get no interrupts either way; "
                + "sending only \(vectors) vectors so QEMU does not reject (and make blocking) the rest; start QEMU with vectors=\(regions)")
        case let .vmVectorMismatch(peer, vectors, regions, _):
            text.append("QEMU (\(describe(peer))) has ivshmem-doorbell vectors=\(vectors) but the layout has only \(regions) regions: "
                + "vectors \(regions)...\(vectors - 1) will never fire; vectors=\(regions) is enough")
        case let .clientServed(region, index, peer):
            text.append("client served region '"); text.append(region)
            text.append("' (#"); text.append(index); text.append(") to "); text.append(peer)
        case let .clientRefused(reason, peer):
            text.append("client refused (\(describe(peer))): \(reason)")
        case let .vmLaunched(pid, command):
            text.append("VM started (pid \(pid)): \(command.joined(separator: " "))")
        case let .vmSignalled(pid, signal, timeout):
            text.append("passed \(signalName(signal)) on to the VM (pid \(pid)); killing it if it has not exited in \(timeout) ms")
        case let .vmKilled(pid):
            text.append("the VM (pid \(pid)) did not exit in time: killed it")
        case let .vmExited(pid, termination):
            switch termination {
            case let .exited(code): text.append("the VM (pid \(pid)) exited with status \(code): stopping")
            case let .signalled(signal): text.append("the VM (pid \(pid)) was killed by \(signalName(signal)): stopping")
            }
        }
    }
}
