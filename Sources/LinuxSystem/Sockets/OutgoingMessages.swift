import CLinux
import Glibc

/// Messages to send, each with the fds it carries, prepared once: payloads,
/// iovecs, SCM_RIGHTS blocks and sendmmsg headers sit in one block of
/// memory, so sending the same messages again (every client gets the same
/// greeting and grant, every VM the same handshake) builds nothing.
/// The fds are borrowed: the server owns them and outlives every send, or
/// their owners are `retained` until these messages are gone (a multi-peer
/// announcement may wait in a slow peer's queue after its peer has left).
/// Loop thread only (the kernel writes each header's msg_len on a send).
package final class OutgoingMessages {
    package struct Message {
        package var bytes: [UInt8]
        package var fds: [Int32]

        package init(bytes: [UInt8], fds: [Int32]) {
            self.bytes = bytes
            self.fds = fds
        }
    }

    package let messages: [Message]
    /// Kept alive while these messages may still be sent: what owns their fds.
    private let retained: [AnyObject]
    private let block: UnsafeMutableRawPointer
    private let headers: UnsafeMutablePointer<ivs_mmsghdr>

    package var count: Int { messages.count }

    package init(_ messages: [Message], retaining retained: [AnyObject] = []) {
        precondition(!messages.isEmpty && messages.allSatisfy { !$0.bytes.isEmpty },
                     "every message needs a byte (fds travel with data)")
        self.messages = messages
        self.retained = retained
        let alignment = MemoryLayout<ivs_mmsghdr>.alignment
        func rounded(_ size: Int) -> Int { (size + alignment - 1) / alignment * alignment }
        let controlSizes = messages.map { ControlMessages.space(forDescriptors: $0.fds.count) }
        let headerBytes = messages.count * MemoryLayout<ivs_mmsghdr>.stride
        let iovecBytes = messages.count * MemoryLayout<iovec>.stride
        let controlBytes = controlSizes.reduce(0) { $0 + rounded($1) }
        let payloadBytes = messages.reduce(0) { $0 + $1.bytes.count }
        let total = headerBytes + iovecBytes + controlBytes + payloadBytes
        block = .allocate(byteCount: total, alignment: alignment)
        block.initializeMemory(as: UInt8.self, repeating: 0, count: total)
        headers = block.bindMemory(to: ivs_mmsghdr.self, capacity: messages.count)
        let iovecs = (block + headerBytes).bindMemory(to: iovec.self, capacity: messages.count)
        var control = block + headerBytes + iovecBytes
        var payload = control + controlBytes
        for (index, message) in messages.enumerated() {
            message.bytes.withUnsafeBytes { payload.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            iovecs[index] = iovec(iov_base: payload, iov_len: message.bytes.count)
            payload += message.bytes.count
            headers[index].msg_hdr.msg_iov = iovecs + index
            headers[index].msg_hdr.msg_iovlen = 1
            guard !message.fds.isEmpty else { continue }
            headers[index].msg_hdr.msg_control = control
            headers[index].msg_hdr.msg_controllen = controlSizes[index]
            ControlMessages.writeRights(message.fds, into: &headers[index].msg_hdr)
            control += rounded(controlSizes[index])
        }
    }

    deinit { block.deallocate() }

    /// Sends whole messages from `index` on: one sendmsg for the last one,
    /// one sendmmsg for several. Returns how many went out whole and how
    /// many bytes of the next one went out (a partial send stops there),
    /// or nil when the socket is full.
    package func send(on fd: Int32, from index: Int) throws(SystemError) -> (whole: Int, partialBytes: Int)? {
        precondition(index >= 0 && index < messages.count)
        let remaining = messages.count - index
        if remaining == 1 {
            let sent = try Posix.retryingUnlessWouldBlock(.sendmsg) { () -> Int in
                sendmsg(fd, &headers[index].msg_hdr, Int32(MSG_NOSIGNAL))
            }
            guard let sent else { return nil }
            return sent == messages[index].bytes.count ? (1, 0) : (0, sent)
        }
        let batch = UInt32(min(remaining, Int(IVS_SENDMMSG_MAX)))
        let result = try Posix.retryingUnlessWouldBlock(.sendmmsg) { () -> Int32 in
            ivs_sendmmsg_prepared(fd, headers + index, batch, Int32(MSG_NOSIGNAL))
        }
        guard let result, result > 0 else { return nil }
        for offset in 0..<Int(result) {
            let sent = Int(headers[index + offset].msg_len)
            if sent != messages[index + offset].bytes.count { return (offset, sent) }
        }
        return (Int(result), 0)
    }
}
