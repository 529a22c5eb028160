import HostnatAddressing
import Foundation
import Glibc
import HostnatDataplane
import HostnatEngine
import HostnatPackets
import HostnatTestSupport
import Testing

@Suite("SocketAddress")
struct SocketAddressTests {
  @Test(
    "parsing",
    arguments: [
      ("127.0.0.1:4000", "127.0.0.1:4000"),
      ("127.0.0.1:0", "127.0.0.1:0"),
      ("192.0.2.1:65535", "192.0.2.1:65535"),
      ("127.0.0.1:080", "127.0.0.1:80"),
      ("127.0.0.1:65536", nil),
      ("127.0.0.1", nil),
      ("127.0.0.1:", nil),
      (":80", nil),
      ("256.0.0.1:1", nil),
      ("127.0.0.1:+1", nil),
      (" 127.0.0.1:1", nil),
      ("127.0.0.1:1:2", nil),
      ("127.0.0.1:123456", nil),
    ] as [(String, String?)])
  func parse(text: String, expected: String?) {
    #expect(SocketAddress(text)?.description == expected)
  }

  @Test func codableAsText() throws {
    let a = SocketAddress(ip: loopback, port: 4001)
    let data = try JSONEncoder().encode([a])
    #expect(String(decoding: data, as: UTF8.self) == "[\"127.0.0.1:4001\"]")
    #expect(try JSONDecoder().decode([SocketAddress].self, from: data) == [a])
  }
}

@Suite("Dataplane on loopback", .serialized)
struct DataplaneTests {
  @Test func batchSendReceiveRoundTrip() throws {
    let a = try bindLoopback()
    let b = try bindLoopback()
    defer { closeAll(a, b) }
    #expect(a.localAddress.port != 0 && a.localAddress.port != b.localAddress.port)
    let batch = PacketBatch(capacity: 16)
    for i in 0..<10 {
      let bytes = [UInt8](repeating: UInt8(i), count: 1 + i * 100)
      #expect(bytes.withUnsafeBytes { batch.append(to: b.localAddress, copying: $0) })
    }
    let result = a.send(batch)
    #expect(result.sent == 10 && result.failed == 0)
    let got = try receive(b, count: 10)
    #expect(got.count == 10)
    for (i, d) in got.enumerated() {
      #expect(d.bytes == [UInt8](repeating: UInt8(i), count: 1 + i * 100))
      #expect(d.address == a.localAddress)
    }
    // A timeout returns 0 instead of blocking.
    let empty = PacketBatch(capacity: 4)
    #expect(try b.receive(into: empty) == 0)
    // Oversized datagrams are refused by the batch, not truncated.
    let big = [UInt8](repeating: 0, count: PacketBatch.slotSize + 1)
    #expect(!big.withUnsafeBytes { batch.append(to: b.localAddress, copying: $0) })
  }

  @Test func bindErrorCarriesErrno() throws {
    let a = try bindLoopback()
    defer { a.close() }
    #expect(throws: SocketError.self) { try UDPSocket(binding: a.localAddress) }
    do {
      _ = try UDPSocket(binding: a.localAddress)
    } catch {
      #expect(error.code == EADDRINUSE)
      #expect(error.description.contains("bind"))
    }
  }

  /// VM socket -> agent -> edge socket, and the reply back; plus drops and a config change mid-run.
  @Test func agentEndToEnd() throws {
    let vm = try bindLoopback()
    let edge = try bindLoopback()
    let agentSocket = try bindLoopback()
    defer { closeAll(vm, edge, agentSocket) }
    let agent = try AgentDataplane(socket: agentSocket, capacity: 1024)
    try agent.apply(EngineConfig(vms: [vmConfig()]), version: 1)
    agent.setEdge(edge.localAddress)
    agent.start()
    defer { agent.stop() }

    // Outbound: NAT source inside the VM's block, VNI 2.
    let out = PacketBuilder.udp(source: vmIP, destination: server, sourcePort: 5000, destinationPort: 53, payload: [1, 2])
    try vm.send(Underlay.encapsulate(out, vni: Underlay.overlayVNI), to: agentSocket.localAddress)
    let atEdge = try receive(edge)
    try #require(atEdge.count == 1)
    #expect(atEdge[0].address == agentSocket.localAddress)
    let (vni, inner) = try #require(decap(atEdge[0].bytes))
    #expect(vni == Underlay.internetVNI)
    let translated = try PacketParser.parse(inner)
    #expect(translated.source == natA && translated.destination == server)
    let (natPort, dstPort) = try #require(udpPorts(translated))
    #expect((1024..<1088).contains(Int(natPort)) && dstPort == 53)

    // Inbound reply: VM's IP and port restored, VNI 1, sent to the VM's learned address.
    let reply = PacketBuilder.udp(source: server, destination: natA, sourcePort: 53, destinationPort: natPort, payload: [3])
    try edge.send(Underlay.encapsulate(reply, vni: Underlay.internetVNI), to: agentSocket.localAddress)
    let atVM = try receive(vm)
    try #require(atVM.count == 1)
    let (vni2, inner2) = try #require(decap(atVM[0].bytes))
    #expect(vni2 == Underlay.overlayVNI)
    let back = try PacketParser.parse(inner2)
    #expect(back.destination == vmIP && back.source == server)
    #expect(udpPorts(back)?.1 == 5000)

    // A source that is no VM of the config: dropped by the engine, not learned, nothing at the edge.
    let stranger = PacketBuilder.udp(source: IPv4Address(10, 0, 0, 99), destination: server, sourcePort: 1, destinationPort: 53)
    try vm.send(Underlay.encapsulate(stranger, vni: Underlay.overlayVNI), to: agentSocket.localAddress)
    // Malformed underlay: not Geneve; and Geneve with an unknown VNI.
    try vm.send([0xFF, 0x01, 0x02], to: agentSocket.localAddress)
    try vm.send(Underlay.encapsulate(out, vni: 7), to: agentSocket.localAddress)
    #expect(eventually { agent.stats().loop.unknownVNI == 1 && agent.stats().global.noNATConfigured == 1 })
    let s = agent.stats()
    #expect(s.loop.malformedUnderlay == 1)
    #expect(s.loop.engineDropsOut == 1)
    #expect(s.vmAddresses == ["vm-a": vm.localAddress])
    #expect(s.vms["vm-a"]?.packetsOut == 1 && s.vms["vm-a"]?.packetsIn == 1 && s.vms["vm-a"]?.newFlows == 1)
    #expect(s.appliedVersion == 1 && s.flows == 1)
    #expect(try receive(edge, within: .milliseconds(100)).isEmpty)

    // Reply to a port nobody maps: filtered, counted.
    let unsolicited = PacketBuilder.udp(source: server, destination: natA, sourcePort: 53, destinationPort: 1087 == natPort ? 1086 : 1087)
    try edge.send(Underlay.encapsulate(unsolicited, vni: Underlay.internetVNI), to: agentSocket.localAddress)
    #expect(eventually { agent.stats().global.filteredInbound == 1 })

    // An invalid config is refused and the old one stays.
    #expect(throws: EngineError.self) {
      try agent.apply(EngineConfig(vms: [vmConfig(), vmConfig()]), version: 9)
    }
    #expect(agent.stats().appliedVersion == 1)

    // New block mid-run: new flows take ports from it.
    try agent.apply(EngineConfig(vms: [vmConfig(natIP: natB, ports: 2000..<2064)]), version: 2)
    #expect(agent.stats().appliedVersion == 2)
    let out2 = PacketBuilder.udp(source: vmIP, destination: server, sourcePort: 6000, destinationPort: 53)
    try vm.send(Underlay.encapsulate(out2, vni: Underlay.overlayVNI), to: agentSocket.localAddress)
    let atEdge2 = try receive(edge)
    try #require(atEdge2.count == 1)
    let p2 = try innerPacket(atEdge2[0].bytes)
    #expect(p2.source == natB)
    #expect((2000..<2064).contains(Int(try #require(udpPorts(p2)).0)))
  }

  @Test func agentDropsWithoutEdgeAndBeforeConfig() throws {
    let vm = try bindLoopback()
    let agentSocket = try bindLoopback()
    defer { closeAll(vm, agentSocket) }
    let agent = try AgentDataplane(socket: agentSocket, capacity: 64)
    agent.start()
    defer { agent.stop() }
    let out = PacketBuilder.udp(source: vmIP, destination: server, sourcePort: 5000, destinationPort: 53)
    try vm.send(Underlay.encapsulate(out, vni: Underlay.overlayVNI), to: agentSocket.localAddress)
    #expect(eventually { agent.stats().loop.notConfigured == 1 })
    #expect(agent.stats().flows == 0 && agent.stats().appliedVersion == nil)
    try agent.apply(EngineConfig(vms: [vmConfig()]), version: 5)
    try vm.send(Underlay.encapsulate(out, vni: Underlay.overlayVNI), to: agentSocket.localAddress)
    #expect(eventually { agent.stats().loop.noEdge == 1 })
    agent.stop()
    agent.stop()  // idempotent
    #expect(agent.stats().loop.received == 2)
  }

  @Test func agentLogDrain() throws {
    let vm = try bindLoopback()
    let edge = try bindLoopback()
    let agentSocket = try bindLoopback()
    defer { closeAll(vm, edge, agentSocket) }
    var config = vmConfig()
    config.gateway.logging = LoggingConfig(enabled: true, filter: .all)
    let agent = try AgentDataplane(socket: agentSocket, capacity: 64, initialConfig: EngineConfig(vms: [config]), initialVersion: 3)
    agent.enableLog(capacity: 16)
    agent.setEdge(edge.localAddress)
    agent.start()
    defer { agent.stop() }
    let out = PacketBuilder.udp(source: vmIP, destination: server, sourcePort: 5000, destinationPort: 53)
    try vm.send(Underlay.encapsulate(out, vni: Underlay.overlayVNI), to: agentSocket.localAddress)
    #expect(try receive(edge).count == 1)
    let log = agent.drainLog()
    #expect(log.count == 1)
    #expect(log.first?.vmID == "vm-a" && log.first?.record.status == .ok && log.first?.record.natIP == natA)
    #expect(agent.drainLog().isEmpty)
  }

  /// The flow table in a file: a second agent on the same file keeps the first one's flows.
  @Test func flowRegionSurvivesRestart() throws {
    let path = "/tmp/hostnat-dataplane-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).flows"
    defer { unlink(path) }
    let config = EngineConfig(vms: [vmConfig()])
    let vm = try bindLoopback()
    let edge = try bindLoopback()
    defer { closeAll(vm, edge) }
    let out = PacketBuilder.udp(source: vmIP, destination: server, sourcePort: 5000, destinationPort: 53)

    var natPort: UInt16 = 0
    do {
      let (region, attached) = try FlowRegion.open(path: path, capacity: 256)
      #expect(!attached && !region.attached)
      let agentSocket = try bindLoopback()
      defer { agentSocket.close() }
      let agent = try AgentDataplane(socket: agentSocket, capacity: 256, flowRegion: region, initialConfig: config)
      agent.setEdge(edge.localAddress)
      agent.start()
      try vm.send(Underlay.encapsulate(out, vni: Underlay.overlayVNI), to: agentSocket.localAddress)
      let got = try receive(edge)
      try #require(got.count == 1)
      natPort = try #require(udpPorts(try innerPacket(got[0].bytes))).0
      agent.stop()
      #expect(agent.stats().flows == 1)
    }

    // Reopened: attached, flows kept. An agent wanting another capacity is refused.
    let (region, attached) = try FlowRegion.open(path: path, capacity: 256)
    #expect(attached)
    let agentSocket = try bindLoopback()
    defer { agentSocket.close() }
    #expect(throws: FlowRegionError.self) { try AgentDataplane(socket: agentSocket, capacity: 512, flowRegion: region) }
    let agent = try AgentDataplane(socket: agentSocket, capacity: 256, flowRegion: region, initialConfig: config, initialVersion: 1)
    agent.setEdge(edge.localAddress)
    #expect(agent.stats().flows == 1)
    agent.start()
    defer { agent.stop() }
    // The reply to the old mapping still translates (the VM's underlay address is not persisted, so
    // it waits for the VM's next packet: counted as unknownVM).
    let reply = PacketBuilder.udp(source: server, destination: natA, sourcePort: 53, destinationPort: natPort)
    try edge.send(Underlay.encapsulate(reply, vni: Underlay.internetVNI), to: agentSocket.localAddress)
    #expect(eventually { agent.stats().global.translatedIn == 1 })
    #expect(agent.stats().loop.unknownVM == 1 && agent.stats().global.filteredInbound == 0)
    // The VM's next packet keeps its NAT port, and the reply now reaches it.
    try vm.send(Underlay.encapsulate(out, vni: Underlay.overlayVNI), to: agentSocket.localAddress)
    let again = try receive(edge)
    try #require(again.count == 1)
    #expect(udpPorts(try innerPacket(again[0].bytes))?.0 == natPort)
    #expect(agent.stats().global.flowsCreated == 0)
    try edge.send(Underlay.encapsulate(reply, vni: Underlay.internetVNI), to: agentSocket.localAddress)
    let atVM = try receive(vm)
    try #require(atVM.count == 1)
    #expect(try innerPacket(atVM[0].bytes).destination == vmIP)

    // A file of another size is reformatted rather than attached.
    let (other, otherAttached) = try FlowRegion.open(path: path + ".other", capacity: 128)
    defer { unlink(path + ".other") }
    #expect(!otherAttached && other.capacity == 128)
  }

  @Test func edgeRoutesRepliesToOwner() throws {
    let hostA = try bindLoopback()
    let hostB = try bindLoopback()
    let edgeSocket = try bindLoopback()
    defer { closeAll(hostA, hostB, edgeSocket) }
    let edge = EdgeDataplane(socket: edgeSocket, servers: EchoServers())
    try edge.setRoutes(
      [
        EdgeRoute(natIP: natA, firstPort: 1024, count: 64, host: hostA.localAddress),
        EdgeRoute(natIP: natA, firstPort: 2000, count: 64, host: hostB.localAddress),
      ], externalIPs: [IPv4Address(192, 0, 2, 50): hostB.localAddress])
    #expect(throws: EdgeRouteError.self) {
      try edge.setRoutes([
        EdgeRoute(natIP: natA, firstPort: 1024, count: 64, host: hostA.localAddress),
        EdgeRoute(natIP: natA, firstPort: 1087, count: 1, host: hostB.localAddress),
      ])
    }
    edge.start()
    defer { edge.stop() }

    func send(_ inner: [UInt8], from host: UDPSocket) throws {
      try host.send(Underlay.encapsulate(inner, vni: Underlay.internetVNI), to: edgeSocket.localAddress)
    }
    // UDP from A's block: echo back to A.
    try send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 1030, destinationPort: 7), from: hostA)
    let a = try receive(hostA)
    try #require(a.count == 1)
    let (vni, inner) = try #require(decap(a[0].bytes))
    #expect(vni == Underlay.internetVNI)
    let p = try PacketParser.parse(inner)
    #expect(p.destination == natA && udpPorts(p)?.1 == 1030)
    // From B's block (sent by B, its owner: the edge fence drops it from anyone else, see
    // EdgeFenceTests): the reply goes to B.
    try send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 2001, destinationPort: 7), from: hostB)
    #expect(try receive(hostB).count == 1)
    // ICMP echo: the identifier is the port.
    try send(PacketBuilder.icmpEcho(source: natA, destination: server, identifier: 2063, sequence: 1), from: hostB)
    let echo = try receive(hostB)
    try #require(echo.count == 1)
    #expect(try innerPacket(echo[0].bytes).transport == .icmpEcho(type: 0, identifier: 2063, sequence: 1))
    // 1:1 external IP: any port.
    try send(PacketBuilder.udp(source: IPv4Address(192, 0, 2, 50), destination: server, sourcePort: 40000, destinationPort: 7), from: hostB)
    #expect(try receive(hostB).count == 1)
    // Unowned port: dropped by the edge fence before any server sees it, and counted.
    try send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 1500, destinationPort: 7), from: hostA)
    try hostA.send([1, 2, 3], to: edgeSocket.localAddress)
    #expect(eventually { edge.stats().droppedNotOwner == 1 && edge.stats().malformed == 1 })
    // Hairpin: A's packet to a NAT IP:port of B goes straight to B, not to the servers.
    let before = edge.withServers { $0.received }
    try send(PacketBuilder.udp(source: natA, destination: natA, sourcePort: 1030, destinationPort: 2010), from: hostA)
    #expect(try receive(hostB).count == 1)
    #expect(edge.withServers { $0.received } == before)

    let s = edge.stats()
    #expect(s.received == 7 && s.routed == 5 && s.hairpinned == 1)
    #expect(s.perHost[hostA.localAddress.description] == 1 && s.perHost[hostB.localAddress.description] == 4)
    #expect(s.droppedUnowned == 0)
    #expect(edge.withServers { $0.received } == 4)
    #expect(eventually { edge.withServers { $0.ticks } > 1 })
    #expect(try receive(hostA, within: .milliseconds(50)).isEmpty)
  }

  /// Private Google Access replies go to the VM's host by internal IP; a direct client (a
  /// serverless platform's egress IP, no VPC) is answered where it sent from; other unowned
  /// destinations stay dropped.
  @Test func edgeRoutesPrivateGoogleAccessAndDirectClients() throws {
    let hostA = try bindLoopback()
    let client = try bindLoopback()
    let edgeSocket = try bindLoopback()
    defer { closeAll(hostA, client, edgeSocket) }
    let edge = EdgeDataplane(socket: edgeSocket, servers: EchoServers())
    let insideIP = IPv4Address(10, 9, 0, 4)
    let platform = IPv4Address(192, 0, 2, 195)
    try edge.setRoutes([], externalIPs: [insideIP: hostA.localAddress], directClients: [IPv4CIDR("192.0.2.192/26")!])
    edge.start()
    defer { edge.stop() }
    try hostA.send(
      Underlay.encapsulate(PacketBuilder.udp(source: insideIP, destination: server, sourcePort: 41000, destinationPort: 7), vni: Underlay.internetVNI),
      to: edgeSocket.localAddress)
    let pga = try receive(hostA)
    try #require(pga.count == 1)
    #expect(try innerPacket(pga[0].bytes).destination == insideIP, "the reply keeps the internal IP")
    try client.send(
      Underlay.encapsulate(PacketBuilder.udp(source: platform, destination: server, sourcePort: 41001, destinationPort: 7), vni: Underlay.internetVNI),
      to: edgeSocket.localAddress)
    let answered = try receive(client)
    try #require(answered.count == 1)
    #expect(try innerPacket(answered[0].bytes).destination == platform)
    // Outside the direct-client range: a source nobody owns, dropped by the edge fence.
    try client.send(
      Underlay.encapsulate(PacketBuilder.udp(source: IPv4Address(192, 0, 2, 5), destination: server, sourcePort: 41002, destinationPort: 7), vni: Underlay.internetVNI),
      to: edgeSocket.localAddress)
    #expect(eventually { edge.stats().droppedNotOwner == 1 })
    #expect(edge.stats().droppedUnowned == 0 && edge.withServers { $0.received } == 2)
    let s = edge.stats()
    #expect(s.directClientPackets == 1 && s.directClientReplies == 1)
    #expect(try receive(client, within: .milliseconds(50)).isEmpty)
  }

  /// Internet-side workloads speak VNI 2 to the edge.
  @Test func internetClientDataplaneSpeaksVNI2() throws {
    let edge = try bindLoopback()
    let clientSocket = try bindLoopback()
    defer { closeAll(edge, clientSocket) }
    let plane = InternetClientDataplane(socket: clientSocket, agent: edge.localAddress, workloads: [(ip: vmIP, workload: OneShotWorkload(ip: vmIP))])
    plane.start()
    defer { plane.stop() }
    let emitted = try receive(edge)
    try #require(emitted.count == 1)
    #expect(decap(emitted[0].bytes)?.vni == Underlay.internetVNI)
    try edge.send(Underlay.encapsulate(PacketBuilder.udp(source: server, destination: vmIP, sourcePort: 7, destinationPort: 5000), vni: Underlay.overlayVNI), to: clientSocket.localAddress)
    #expect(eventually { plane.stats().malformed == 1 }, "VNI 1 is not this side's")
  }

  @Test func vmDataplaneDemuxesAndTicks() throws {
    let agent = try bindLoopback()
    let vmSocket = try bindLoopback()
    defer { closeAll(agent, vmSocket) }
    let planes = VMDataplane(
      socket: vmSocket, agent: agent.localAddress,
      workloads: [(ip: vmIP, workload: OneShotWorkload(ip: vmIP)), (ip: vm2IP, workload: OneShotWorkload(ip: vm2IP))])
    planes.start()
    defer { planes.stop() }
    // Each workload's first tick emits one datagram, Geneve VNI 1, to the agent.
    let emitted = try receive(agent, count: 2)
    #expect(emitted.count == 2)
    let sources = Set(emitted.compactMap { decap($0.bytes) }.filter { $0.vni == Underlay.overlayVNI }.compactMap {
      try? PacketParser.parse($0.inner).source
    })
    #expect(sources == [vmIP, vm2IP])
    #expect(emitted.allSatisfy { $0.address == vmSocket.localAddress })
    // Demux by inner destination.
    let toVM2 = PacketBuilder.udp(source: server, destination: vm2IP, sourcePort: 7, destinationPort: 5000)
    try agent.send(Underlay.encapsulate(toVM2, vni: Underlay.overlayVNI), to: vmSocket.localAddress)
    let toNobody = PacketBuilder.udp(source: server, destination: IPv4Address(10, 9, 9, 9), sourcePort: 7, destinationPort: 5000)
    try agent.send(Underlay.encapsulate(toNobody, vni: Underlay.overlayVNI), to: vmSocket.localAddress)
    try agent.send(Underlay.encapsulate(toVM2, vni: Underlay.internetVNI), to: vmSocket.localAddress)
    #expect(eventually { planes.stats().received == 3 })
    let counts = planes.withWorkloads { ws in ws.map { $0.workload.received.count } }
    #expect(counts == [0, 1])
    let s = planes.stats()
    #expect(s.delivered == 1 && s.unknownDestination == 1 && s.malformed == 1 && s.emitted == 2 && s.sent == 2)
    #expect(s.ticks > 0)
  }

  /// Not a benchmark: a bounded loopback run whose rate is printed for the report.
  @Test func throughputFigure() throws {
    let vm = try bindLoopback()
    let edge = try bindLoopback()
    let agentSocket = try bindLoopback()
    defer { closeAll(vm, edge, agentSocket) }
    let agent = try AgentDataplane(socket: agentSocket, capacity: 4096, initialConfig: EngineConfig(vms: [vmConfig()]))
    agent.setEdge(edge.localAddress)
    agent.start()
    defer { agent.stop() }
    let batch = PacketBatch(capacity: 64)
    let datagrams = (0..<16).map { i in
      Underlay.encapsulate(
        PacketBuilder.udp(
          source: vmIP, destination: server, sourcePort: UInt16(5000 + i), destinationPort: 53,
          payload: [UInt8](repeating: 0, count: 64)), vni: Underlay.overlayVNI)
    }
    let total = 40_000
    let start = ContinuousClock.now
    var got = 0
    var sentCount = 0
    let sink = PacketBatch(capacity: 64)
    let deadline = start + .seconds(5)
    while got < total * 9 / 10, ContinuousClock.now < deadline {
      if sentCount < total && sentCount - got < 1024 {
        batch.count = 0
        for i in 0..<64 {
          _ = datagrams[i % datagrams.count].withUnsafeBytes { batch.append(to: agentSocket.localAddress, copying: $0) }
        }
        sentCount += vm.send(batch).sent
      }
      let n = try edge.receive(into: sink)
      got += n
      if n == 0 && sentCount >= total { break }
    }
    let seconds = Double((ContinuousClock.now - start).components.attoseconds) / 1e18 + Double((ContinuousClock.now - start).components.seconds)
    print("agent loopback: sent \(sentCount), forwarded \(got) in \(String(format: "%.3f", seconds)) s = \(Int(Double(got) / seconds)) pps (3 threads on 2 cores), agent batches avg \(String(format: "%.1f", Double(agent.stats().loop.received) / Double(max(1, agent.stats().loop.batches)))) datagrams")
    #expect(got > 0)
    #expect(agent.stats().global.translatedOut >= UInt64(got))
  }
}

/// VM-to-VM traffic across two host agents and the edge's VPC fabric: untranslated both ways,
/// tagged with the sending network, routed per network, and met by the receiver's ingress rules.
@Suite("VPC fabric")
struct VPCFabricDataplaneTests {
  static let vmB = IPv4Address(10, 0, 0, 3)

  static func engineConfig(_ vm: VMConfig, rules: [FirewallRule] = []) -> EngineConfig {
    var vm = vm
    vm.network = "vpc"
    return EngineConfig(vms: [vm], networks: ["vpc": NetworkPolicy(firewallRules: rules, internalRanges: [IPv4CIDR("10.0.0.0/24")!], fabricID: 1)])
  }

  @Test func twoHostsTalkThroughTheFabric() throws {
    let vmA = try bindLoopback()
    let vmB = try bindLoopback()
    let agentASocket = try bindLoopback()
    let agentBSocket = try bindLoopback()
    let edgeSocket = try bindLoopback()
    let otherHost = try bindLoopback()
    defer { closeAll(vmA, vmB, agentASocket, agentBSocket, edgeSocket, otherHost) }
    let allowUDP = FirewallRule(
      name: "allow-internal-udp", direction: .ingress, allow: true, matches: [FirewallMatch(protocolNumber: IPProtocol.udp)],
      ranges: [IPv4CIDR("10.0.0.0/24")!])
    let agentA = try AgentDataplane(socket: agentASocket, capacity: 64, initialConfig: Self.engineConfig(vmConfig()), initialVersion: 1)
    let agentB = try AgentDataplane(
      socket: agentBSocket, capacity: 64, initialConfig: Self.engineConfig(vmConfig(id: "vm-b", ip: Self.vmB, ports: 2000..<2064), rules: [allowUDP]),
      initialVersion: 1)
    let edge = EdgeDataplane(socket: edgeSocket, servers: EchoServers())
    try edge.setRoutes([], fabric: [
      VPCFabricRoute(networkID: 1, destination: IPv4CIDR("10.0.0.2/32")!, host: agentASocket.localAddress),
      VPCFabricRoute(networkID: 1, destination: IPv4CIDR("10.0.0.3/32")!, host: agentBSocket.localAddress),
      // Another network with the same range: its traffic never reaches network 1's VMs.
      VPCFabricRoute(networkID: 2, destination: IPv4CIDR("10.0.0.0/24")!, host: otherHost.localAddress),
    ])
    for agent in [agentA, agentB] {
      agent.setEdge(edgeSocket.localAddress)
      agent.start()
    }
    edge.start()
    defer {
      agentA.stop()
      agentB.stop()
      edge.stop()
    }
    // vm-b speaks first (to the Internet), so its agent learns where it is.
    try vmB.send(
      Underlay.encapsulate(PacketBuilder.udp(source: Self.vmB, destination: server, sourcePort: 9, destinationPort: 9), vni: Underlay.overlayVNI),
      to: agentBSocket.localAddress)
    #expect(eventually { agentB.stats().loop.received == 1 })

    let request = PacketBuilder.udp(source: vmIP, destination: Self.vmB, sourcePort: 5000, destinationPort: 53, payload: [1, 2, 3])
    try vmA.send(Underlay.encapsulate(request, vni: Underlay.overlayVNI), to: agentASocket.localAddress)
    let arrived = try receive(vmB)
    try #require(arrived.count == 1)
    #expect(decap(arrived[0].bytes)?.vni == Underlay.overlayVNI)
    #expect(decap(arrived[0].bytes)?.inner == request, "nothing is rewritten inside the VPC")

    let reply = PacketBuilder.udp(source: Self.vmB, destination: vmIP, sourcePort: 53, destinationPort: 5000, payload: [4])
    try vmB.send(Underlay.encapsulate(reply, vni: Underlay.overlayVNI), to: agentBSocket.localAddress)
    let back = try receive(vmA)
    try #require(back.count == 1)
    #expect(decap(back[0].bytes)?.inner == reply, "A's tracked connection lets B's reply in without an ingress rule")
    #expect(agentA.stats().loop.vpcSent == 1 && agentA.stats().loop.vpcReceived == 1)
    #expect(agentB.stats().loop.vpcSent == 1 && agentB.stats().loop.vpcReceived == 1)
    #expect(agentA.stats().flows == 0, "no NAT flow for VPC traffic")
    #expect(edge.stats().vpcRouted == 2)

    // An unsolicited packet from B to A meets A's implied deny-ingress.
    let unsolicited = PacketBuilder.udp(source: Self.vmB, destination: vmIP, sourcePort: 7777, destinationPort: 7777)
    try vmB.send(Underlay.encapsulate(unsolicited, vni: Underlay.overlayVNI), to: agentBSocket.localAddress)
    #expect(eventually { agentA.stats().global.firewallDeniedIngress == 1 })
    #expect(try receive(vmA, within: .milliseconds(50)).isEmpty)

    // The edge keeps networks apart by their tag, and drops what no VM of the network owns.
    let probe = PacketBuilder.udp(source: IPv4Address(10, 0, 0, 9), destination: Self.vmB, sourcePort: 1, destinationPort: 1)
    try vmA.send(Underlay.encapsulate(probe, vni: Underlay.vpcVNI(network: 2)), to: edgeSocket.localAddress)
    let other = try receive(otherHost)
    #expect(other.count == 1 && decap(other[0].bytes)?.vni == Underlay.vpcVNI(network: 2))
    try vmA.send(Underlay.encapsulate(probe, vni: Underlay.vpcVNI(network: 3)), to: edgeSocket.localAddress)
    #expect(eventually { edge.stats().vpcUnrouted == 1 })
  }

  @Test func fabricRoutesAreChecked() throws {
    let host = SocketAddress(ip: IPv4Address(127, 0, 0, 1), port: 9)
    let socket = try bindLoopback()
    defer { closeAll(socket) }
    let edge = EdgeDataplane(socket: socket, servers: EchoServers())
    #expect(throws: EdgeRouteError.self) {
      try edge.setRoutes([], fabric: [VPCFabricRoute(networkID: 0, destination: IPv4CIDR("10.0.0.2/32")!, host: host)])
    }
    #expect(throws: EdgeRouteError.self) {
      try edge.setRoutes([], fabric: [
        VPCFabricRoute(networkID: 1, destination: IPv4CIDR("10.0.0.0/24")!, host: host),
        VPCFabricRoute(networkID: 1, destination: IPv4CIDR("10.0.0.7/32")!, host: host),
      ])
    }
    #expect(Underlay.vpcNetwork(Underlay.vpcVNI(network: 5)) == 5)
    #expect(Underlay.vpcNetwork(Underlay.internetVNI) == nil && Underlay.vpcNetwork(Underlay.vpcVNIBase) == nil)
  }
}
