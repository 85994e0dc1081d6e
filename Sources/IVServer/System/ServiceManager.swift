import CLibUV
import Glibc

/// systemd's readiness protocol (sd_notify): when started by a unit with
/// Type=notify, NOTIFY_SOCKET names a datagram socket to send "READY=1" to.
/// Outside systemd this does nothing.
enum ServiceManager {
    static func notifyReady() {
        guard let value = getenv("NOTIFY_SOCKET") else { return }
        var path = Array(String(cString: value).utf8)
        guard !path.isEmpty, path.count < 108 else { return }
        if path[0] == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        var message = Array("READY=1\nSTATUS=serving\nMAINPID=\(getpid())".utf8)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, &message, message.count, Int32(MSG_NOSIGNAL), $0, length)
            }
        }
    }
}
