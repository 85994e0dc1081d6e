import LinuxSystem
@testable import ServerCore
import WireFormat
import Testing
@testable import IVServer

@Suite("QEMU message sequence")
struct QemuHandshakeTests {
    @Test("version, id, shared memory, peer-0 vectors, own vectors")
    func sequence() {
        let messages = QemuHandshake.messages(regionCount: 3)
        #expect(messages.map(\.value) == [0, 1024, -1, 0, 0, 0, 1024, 1024, 1024])
        #expect(messages.map(\.attachment) == [
            nil, nil, .sharedMemory,
            .guestToHost(region: 0), .guestToHost(region: 1), .guestToHost(region: 2),
            .hostToGuest(region: 0), .hostToGuest(region: 1), .hostToGuest(region: 2),
        ])
    }

    @Test("payloads are 8 little-endian bytes")
    func payloads() {
        let messages = QemuHandshake.messages(regionCount: 1)
        #expect(messages[0].payload == [0, 0, 0, 0, 0, 0, 0, 0])
        #expect(messages[1].payload == [0x00, 0x04, 0, 0, 0, 0, 0, 0])
        #expect(messages[2].payload == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(QemuHandshake.messages(regionCount: 64).count == 3 + 2 * 64)
    }
}
