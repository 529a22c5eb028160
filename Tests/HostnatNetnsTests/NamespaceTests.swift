import HostnatAddressing
import Glibc
import HostnatDataplane
import HostnatNetns
import HostnatPackets
import HostnatTestSupport
import Testing

@Suite("Names (no root)")
struct NameTests {
  @Test("namespace and interface names Linux (and ip) would refuse are rejected up front")
  func names() throws {
    for bad in ["", "-x", ".hidden", "a/b", "a b", "ä", String(repeating: "n", count: 49)] {
      #expect(throws: NetnsError.self, "\(bad)") { try NetworkNamespace(name: bad) }
    }
    #expect(try NetworkNamespace(name: String(repeating: "n", count: 48)).name.count == 48)
    let lab = try NetworkNamespace.labNamespace(lab: "lab1", role: "vm-a")
    #expect(lab.name == "hostnat-lab1-vm-a")
    #expect(lab.path == "/run/netns/hostnat-lab1-vm-a")
    let missing = try NetworkNamespace(name: "hnt-\(getpid())-never-made")
    #expect(!missing.exists)
    for bad in ["", "sixteen-chars-xx", ".", "..", "a/b", "a b"] {
      let error = #expect(throws: NetnsError.self, "\(bad)") { try TUNDevice(name: bad, in: missing) }
      #expect(error?.code == .invalidName)
    }
    #expect(TUNDevice.defaultName.utf8.count <= TUNDevice.maxNameLength)
  }

  @Test("commands: output, exit status, missing programs, time limit")
  func commands() throws {
    let ok = try Command.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    #expect(ok.status == 3 && ok.standardOutput == "out\n" && ok.standardError == "err\n" && !ok.succeeded)
    #expect(throws: NetnsError.self) { try Command.check(["false"]) }
    let missing = #expect(throws: NetnsError.self) { try Command.run(["hostnat-no-such-program"]) }
    #expect(missing?.code == .notFound)
    let start = ContinuousClock.now
    let slow = try Command.run(["sleep", "5"], timeout: .milliseconds(200))
    #expect(slow.timedOut && !slow.succeeded)
    #expect(ContinuousClock.now - start < .seconds(3))
  }
}

@Suite(
  "Namespaces and TUN devices (root)", .serialized,
  .enabled(if: netnsAvailable, "needs Linux, root, /dev/net/tun and iproute2's ip netns (NetworkNamespace.unavailableReason)"))
struct NamespaceTests {
  @Test("create, exec inside, loopback up, delete (idempotent), create twice refused")
  func lifeCycle() throws {
    let name = uniqueNamespaceName("life")
    let ns = try NetworkNamespace.create(named: name)
    defer { try? ns.delete() }
    #expect(ns.exists)
    #expect(NetworkNamespace.list().contains(name))
    #expect(throws: NetnsError.self) { try NetworkNamespace.create(named: name) }
    let lo = try ns.exec(["ip", "-o", "link", "show", "lo"])
    #expect(lo.succeeded)
    #expect(lo.standardOutput.contains("UP"), "\(lo.standardOutput)")
    // Only lo inside: the host's interfaces are not visible.
    let links = try ns.exec(["ip", "-o", "link", "show"])
    #expect(links.standardOutput.split(separator: "\n").count == 1, "\(links.standardOutput)")
    // run: a thread inside sees the namespace's own interfaces.
    let inside = try ns.run { () -> UInt32 in if_nametoindex("lo") }
    #expect(inside == 1)
    try ns.delete()
    #expect(!ns.exists)
    try ns.delete()
  }

  @Test("a TUN device is born inside the namespace, configured there, and goes away when closed")
  func tunDevice() throws {
    let ns = try NetworkNamespace.create(named: uniqueNamespaceName("tun"))
    defer { try? ns.delete() }
    let tun = try TUNDevice(in: ns)
    defer { tun.close() }
    #expect(tun.fileDescriptor >= 0)
    #expect(fcntl(tun.fileDescriptor, F_GETFL) & O_NONBLOCK != 0)
    // There, not in this process's namespace.
    let name = tun.name
    #expect(try ns.run { if_nametoindex(name) } != 0)
    #expect(if_nametoindex(name) == 0)
    try tun.configure(address: vmAddress, prefixLength: 24, mtu: PathMTU.vmMTU, routes: [IPv4CIDR("0.0.0.0/0")!])
    let link = try ns.ip(["-o", "link", "show", tun.name]).standardOutput
    #expect(link.contains("mtu 1400") && link.contains("UP"), "\(link)")
    let addr = try ns.ip(["-o", "-4", "address", "show", tun.name]).standardOutput
    #expect(addr.contains("10.10.0.2/24"), "\(addr)")
    let route = try ns.ip(["route", "show", "default"]).standardOutput
    #expect(route.contains("dev \(tun.name)"), "\(route)")
    tun.close()
    #expect(!(try ns.exec(["ip", "link", "show", TUNDevice.defaultName])).succeeded)
  }

  @Test("bridge alone: echo through the namespace's kernel, wrong VNI and junk dropped, DF too big answered, non-DF fragmented")
  func bridge() throws {
    let peer = try bindLoopback()
    defer { peer.close() }
    let vm = try BridgedNamespace.vm(
      namespace: uniqueNamespaceName("br"), address: vmAddress, prefixLength: 24, agent: peer.localAddress)
    defer { try? vm.shutdown() }
    vm.start()
    let remote = IPv4Address(198, 51, 100, 7)
    let bridgeAddress = vm.underlayAddress

    // An echo request in: the VM's kernel answers out of the TUN, back to the peer as VNI 1.
    let ping = PacketBuilder.icmpEcho(source: remote, destination: vmAddress, identifier: 0x4242, sequence: 1, payload: [1, 2, 3])
    try peer.send(Underlay.encapsulate(ping, vni: Underlay.overlayVNI), to: bridgeAddress)
    let pong = try #require(
      try receiveGeneve(peer) { _, inner in (try? PacketParser.parse(inner))?.protocolNumber == IPProtocol.icmp })
    #expect(pong.vni == Underlay.overlayVNI)
    let parsed = try PacketParser.parse(pong.inner)
    #expect(parsed.source == vmAddress && parsed.destination == remote)
    #expect(parsed.transport == .icmpEcho(type: ICMPType.echoReply, identifier: 0x4242, sequence: 1))

    // Wrong VNI and junk are counted, not delivered.
    try peer.send(Underlay.encapsulate(ping, vni: Underlay.internetVNI), to: bridgeAddress)
    try peer.send([1, 2, 3], to: bridgeAddress)
    #expect(eventually { vm.bridge.stats().drops.wrongVNI == 1 && vm.bridge.stats().drops.malformedUnderlay == 1 })

    // 1500 bytes with DF toward a 1400-byte link: fragmentation-needed back to the sender, from the VM.
    let big = PacketBuilder.udp(
      source: remote, destination: vmAddress, sourcePort: 7000, destinationPort: 9000, payload: [UInt8](repeating: 7, count: 1472))
    try peer.send(Underlay.encapsulate(big, vni: Underlay.overlayVNI), to: bridgeAddress)
    let error = try #require(
      try receiveGeneve(peer) { _, inner in
        if case .icmpError = (try? PacketParser.parse(inner))?.transport { return true }
        return false
      })
    let icmp = try PacketParser.parse(error.inner)
    #expect(icmp.source == vmAddress && icmp.destination == remote)
    #expect(
      icmp.transport
        == .icmpError(
          type: 3, code: 4,
          quoted: .init(source: remote, destination: vmAddress, protocolNumber: IPProtocol.udp, sourcePort: 7000, destinationPort: 9000)))
    #expect(error.inner[26] == 0x05 && error.inner[27] == 0x78)
    #expect(eventually { vm.bridge.stats().fragmentationNeededSent == 1 && vm.bridge.stats().drops.tooBigDontFragment == 1 })

    // 2000 bytes without DF: split into fragments; the VM's kernel reassembles the datagram. (An
    // underlay datagram holds at most Underlay.maxDatagram bytes, so nothing bigger arrives.)
    let listener = try NamespaceSocket.udp(in: vm.namespace)
    try listener.bind(vmAddress, 9001)
    var huge = PacketBuilder.udp(
      source: remote, destination: vmAddress, sourcePort: 7000, destinationPort: 9001,
      payload: (0..<1972).map { UInt8(truncatingIfNeeded: $0 * 7) }, identification: 99)
    huge[6] = 0
    huge[10] = 0
    huge[11] = 0
    let sum = InternetChecksum.checksum(Array(huge[0..<20]))
    huge[10] = UInt8(sum >> 8)
    huge[11] = UInt8(sum & 0xFF)
    try peer.send(Underlay.encapsulate(huge, vni: Underlay.overlayVNI), to: bridgeAddress)
    let got = try #require(listener.receiveFrom())
    #expect(got.bytes == Array(huge[28...]))
    #expect(got.ip == remote && got.port == 7000)
    // The bridge counts a write after it returns, and the kernel may hand the datagram to the
    // listener before that: wait for the counters rather than read them once.
    #expect(eventually { vm.bridge.stats().fragmentsWritten == 2 }, "fragments written: \(vm.bridge.stats().fragmentsWritten)")
    #expect(eventually {
      let stats = vm.bridge.stats()
      return stats.fromTun >= 1 && stats.toPeer >= 1 && stats.toTun >= 2
    }, "\(vm.bridge.stats())")
  }

  @Test("device deleted under a running bridge: failures counted without spinning, stop still bounded")
  func deviceDeletedUnderBridge() throws {
    let peer = try bindLoopback()
    defer { peer.close() }
    let vm = try BridgedNamespace.vm(
      namespace: uniqueNamespaceName("gone"), address: vmAddress, prefixLength: 24, agent: peer.localAddress)
    defer { try? vm.shutdown() }
    vm.start()
    // (Deleting the namespace would not do it: the device's descriptor keeps the namespace alive,
    // nameless, until it is closed.)
    try vm.namespace.ip(["link", "delete", vm.device.name])
    let ping = PacketBuilder.icmpEcho(source: IPv4Address(198, 51, 100, 7), destination: vmAddress, identifier: 1, sequence: 1)
    try peer.send(Underlay.encapsulate(ping, vni: Underlay.overlayVNI), to: vm.underlayAddress)
    #expect(eventually { vm.bridge.stats().drops.tunWriteFailed == 1 })
    usleep(500_000)
    // One failed read per poll interval (50 ms) at most, not a busy loop.
    #expect(vm.bridge.stats().drops.tunReadFailed <= 20, "\(vm.bridge.stats())")
    let start = ContinuousClock.now
    vm.bridge.stop(timeout: .seconds(2))
    #expect(ContinuousClock.now - start < .seconds(1))
  }

  @Test("shutdown removes the namespace and its device, and can be repeated")
  func shutdownCleans() throws {
    let peer = try bindLoopback()
    defer { peer.close() }
    let name = uniqueNamespaceName("down")
    let vm = try BridgedNamespace.vm(namespace: name, address: vmAddress, prefixLength: 24, agent: peer.localAddress)
    vm.start()
    try vm.shutdown()
    #expect(!vm.namespace.exists)
    #expect(!NetworkNamespace.list().contains(name))
    try vm.shutdown()
  }
}
