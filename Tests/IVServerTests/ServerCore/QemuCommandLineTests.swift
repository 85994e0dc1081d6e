import LinuxSystem
@testable import ServerCore
import WireFormat
import Testing
@testable import IVServer

@Suite("QEMU command line")
struct QemuCommandLineTests {
    let socket = "/run/vm1/qemu.sock"

    func vectors(_ arguments: String...) -> Int? {
        QemuCommandLine.doorbellVectors(arguments: ["qemu-system-x86_64", "-m", "1G"] + arguments, socketPath: socket)
    }

    @Test("the device attached to our socket")
    func attached() {
        #expect(vectors("-chardev", "socket,path=\(socket),id=ivsh", "-device", "ivshmem-doorbell,chardev=ivsh,vectors=8") == 8)
        #expect(vectors("--chardev", "socket,id=c0,path=\(socket)", "--device", "driver=ivshmem-doorbell,vectors=4,chardev=c0") == 4)
    }

    @Test("without vectors= QEMU uses 1")
    func defaultIsOne() {
        #expect(vectors("-chardev", "socket,path=\(socket),id=ivsh", "-device", "ivshmem-doorbell,chardev=ivsh") == 1)
    }

    @Test("with several devices, the one whose chardev is our socket")
    func severalDevices() {
        #expect(vectors(
            "-chardev", "socket,path=/other.sock,id=a", "-device", "ivshmem-doorbell,chardev=a,vectors=2",
            "-chardev", "socket,path=\(socket),id=b", "-device", "ivshmem-doorbell,chardev=b,vectors=16") == 16)
        // two devices and none on our socket: cannot tell
        #expect(vectors(
            "-chardev", "socket,path=/x,id=a", "-device", "ivshmem-doorbell,chardev=a,vectors=2",
            "-chardev", "socket,path=/y,id=b", "-device", "ivshmem-doorbell,chardev=b,vectors=3") == nil)
    }

    @Test("a single device is used even when its path is spelled differently")
    func singleDevice() {
        #expect(vectors("-chardev", "socket,path=relative.sock,id=i", "-device", "ivshmem-doorbell,chardev=i,vectors=5") == 5)
    }

    @Test("QEMU's JSON form, as libvirt 9 writes it (the -device before its -chardev)")
    func json() {
        // From `virsh domxml-to-native qemu-argv` of a <shmem> domain (Debian 12, libvirt 9.0).
        #expect(vectors(
            "-device", #"{"driver":"pcie-pci-bridge","id":"pci.4","bus":"pci.1","addr":"0x0"}"#,
            "-device", #"{"driver":"ivshmem-doorbell","id":"shmem0","chardev":"charshmem0","vectors":2,"ioeventfd":true,"bus":"pci.4","addr":"0x1"}"#,
            "-chardev", "socket,id=charshmem0,path=\(socket)", "-msg", "timestamp=on") == 2)
        // Without vectors QEMU uses 1; a JSON chardev names its path under addr.
        #expect(vectors("-device", #"{"driver":"ivshmem-doorbell","chardev":"c"}"#,
                        "-chardev", #"{"backend":"socket","id":"c","addr":{"type":"unix","path":"\#(socket)"}}"#) == 1)
        #expect(vectors("-device", #"{"driver":"ivshmem-doorbell","vectors":8}"#) == 8, "the only device")
        #expect(vectors("-device", #"{"driver":"ivshmem-doorbell","vectors":"#) == nil, "broken JSON says nothing")
    }

    @Test("cannot tell: no device, garbage")
    func cannotTell() {
        #expect(vectors() == nil)
        #expect(vectors("-device", "ivshmem-plain,memdev=m") == nil)
        #expect(vectors("-chardev", "socket,path=\(socket),id=i", "-device", "ivshmem-doorbell,chardev=i,vectors=lots") == nil)
        #expect(vectors("-device") == nil)
    }

    @Test("doubled commas are literal commas")
    func escapedCommas() {
        #expect(QemuCommandLine.parseOptions("socket,path=/a,,b,id=x", implicitKey: "backend")
            == ["backend": "socket", "path": "/a,b", "id": "x"])
        #expect(vectors("-chardev", "socket,path=/run/vm1/q,,emu.sock,id=i", "-device", "ivshmem-doorbell,chardev=i,vectors=3") == 3)
    }

    @Test("fewer vectors shorten the QEMU sequence; more change nothing")
    func handshakeVectors() {
        #expect(QemuHandshake.messages(regionCount: 8, vectorCount: 4).map(\.value) == [0, 1024, -1, 0, 0, 0, 0, 1024, 1024, 1024, 1024])
        #expect(QemuHandshake.messages(regionCount: 2, vectorCount: 9) == QemuHandshake.messages(regionCount: 2))
    }

    @Test("the warning names the dead regions")
    func warningText() {
        let event = VSoCEvent.vmVectorMismatch(peer: PeerCredentials(pid: 7, uid: 1, gid: 2), vectors: 2, regions: 4, deadRegions: ["c", "d"])
        #expect(event.severity == .warning)
        #expect(event.description.contains("vectors=2 but the layout has 4 regions: regions 2...3 (c, d) get no interrupts"))
    }
}
