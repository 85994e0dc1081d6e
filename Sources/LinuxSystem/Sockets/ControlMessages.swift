import CLinux
import Glibc

/// Ancillary data on UNIX sockets: the one place that writes an SCM_RIGHTS
/// block (every message that carries fds, prepared or not) and the one
/// place that reads what arrived (SCM_RIGHTS, SCM_CREDENTIALS). The CMSG_*
/// macros come from CLinux.
enum ControlMessages {
    /// Room for one SCM_RIGHTS block of `count` fds (0 for none).
    static func space(forDescriptors count: Int) -> Int {
        count == 0 ? 0 : ivs_cmsg_space(MemoryLayout<Int32>.size * count)
    }

    /// Room for one SCM_CREDENTIALS block.
    static var credentialsSpace: Int { ivs_cmsg_space(MemoryLayout<ivs_peer_credentials>.size) }

    /// Writes one SCM_RIGHTS block with `fds` at the start of the message's
    /// control buffer, which `msg_control` and `msg_controllen` (at least
    /// `space(forDescriptors:)`, zeroed) already describe.
    static func writeRights(_ fds: [Int32], into message: inout msghdr) {
        guard !fds.isEmpty else { return }
        // msg_controllen must be set before CMSG_FIRSTHDR reads it.
        let header = ivs_cmsg_firsthdr(&message)!
        header.pointee.cmsg_level = SOL_SOCKET
        header.pointee.cmsg_type = Int32(SCM_RIGHTS)
        header.pointee.cmsg_len = ivs_cmsg_len(MemoryLayout<Int32>.size * fds.count)
        let data = UnsafeMutableRawPointer(ivs_cmsg_data(header)!)
        for (index, descriptor) in fds.enumerated() {
            data.storeBytes(of: descriptor, toByteOffset: index * MemoryLayout<Int32>.size, as: Int32.self)
        }
    }

    /// Collects every fd of every SCM_RIGHTS block of a received message
    /// (each must be owned by the caller at once), and its sender's
    /// credentials when an SCM_CREDENTIALS block came.
    static func read(_ message: inout msghdr, fds: inout [Int32], sender: inout ivs_peer_credentials?) {
        let credentialsLength = MemoryLayout<ivs_peer_credentials>.size
        var header = ivs_cmsg_firsthdr(&message)
        while let current = header {
            let dataLength = Int(current.pointee.cmsg_len) - ivs_cmsg_len(0)
            let data = UnsafeRawPointer(ivs_cmsg_data(current)!)
            if current.pointee.cmsg_level == SOL_SOCKET && current.pointee.cmsg_type == Int32(SCM_RIGHTS) {
                for index in 0..<dataLength / MemoryLayout<Int32>.size {
                    fds.append(data.loadUnaligned(fromByteOffset: index * MemoryLayout<Int32>.size, as: Int32.self))
                }
            } else if current.pointee.cmsg_level == SOL_SOCKET && current.pointee.cmsg_type == IVS_SCM_CREDENTIALS
                        && dataLength >= credentialsLength {
                sender = data.loadUnaligned(as: ivs_peer_credentials.self)
            }
            header = ivs_cmsg_nxthdr(&message, current)
        }
    }
}
