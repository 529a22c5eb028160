import HostnatAddressing
import Glibc
import HostnatDataplane
import HostnatNetns
import HostnatPackets
import HostnatTestSupport
import Testing

/// The kernels' own stacks through the whole chain: VM namespace -> TUN bridge (VNI 1) -> agent
/// (NAT 10.10.0.2 -> 203.0.113.10:1024..1087) -> edge (VNI 2) -> uplink bridge -> Internet namespace
/// (192.0.2.80), and back. Each test builds its own chain and removes it, also on failure.
@Suite(
  "Namespaces end to end (root)", .serialized,
  .enabled(if: netnsAvailable, "needs Linux, root, /dev/net/tun and iproute2's ip netns (NetworkNamespace.unavailableReason)"))
struct EndToEndTests {
  static let pingInstalled = Command.find("ping") != nil

  @Test(
    "ping from the VM namespace to 192.0.2.80; the VM interface's MTU is enforced",
    .enabled(if: pingInstalled, "needs ping (Debian package iputils-ping)"))
  func ping() throws {
    let chain = try netnsChain()
    defer { chain.shutdown() }
    let result = try chain.vm.namespace.exec(["ping", "-c", "3", "-W", "1", "-i", "0.2", inetServer.description], timeout: .seconds(10))
    #expect(result.succeeded, "\(result)\n\(result.standardOutput)\n\(chain.report())")
    #expect(result.standardOutput.contains("3 received"), "\(result.standardOutput)")
    // The echo requests were translated: the Internet namespace saw them from the NAT IP. (Each
    // loop publishes its counters after its batch, which can be after ping has its reply.)
    #expect(eventually { chain.agent.stats().global.translatedOut >= 3 }, "\(chain.report())")
    #expect(eventually { chain.edge.stats().uplinkForwarded >= 3 && chain.edge.stats().uplinkReceived >= 3 }, "\(chain.report())")
    // A 1400-byte packet fits the VM's link both ways; 1500 bytes with DF does not leave the VM.
    let fits = try chain.vm.namespace.exec(["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1372", inetServer.description])
    #expect(fits.succeeded, "\(fits)\n\(fits.standardOutput)")
    let tooBig = try chain.vm.namespace.exec(["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1472", inetServer.description])
    #expect(!tooBig.succeeded)
    #expect((tooBig.standardOutput + tooBig.standardError).contains("1400"), "\(tooBig.standardOutput)\(tooBig.standardError)")
  }

  @Test("UDP request/response: the server in the Internet namespace sees 203.0.113.10")
  func udp() throws {
    let chain = try netnsChain()
    defer { chain.shutdown() }
    let server = try NamespaceSocket.udp(in: chain.inet.namespace)
    try server.bind(inetServer, 7000)
    let client = try NamespaceSocket.udp(in: chain.vm.namespace)
    for i in 0..<3 {
      let request = Array("request \(i)".utf8)
      #expect(client.send(request, to: inetServer, 7000) == 0)
      let got = try #require(server.receiveFrom(), "\(chain.report())")
      #expect(got.bytes == request)
      #expect(got.ip == natIP, "server saw \(got.ip)")
      #expect(natPorts.contains(Int(got.port)), "server saw port \(got.port)")
      let response = Array("response \(i)".utf8)
      #expect(server.send(response, to: got.ip, got.port) == 0)
      let answer = try #require(client.receiveFrom(), "\(chain.report())")
      #expect(answer.bytes == response && answer.ip == inetServer && answer.port == 7000)
    }
    #expect(chain.agent.stats().flows == 1)
  }

  @Test("TCP: connect, 64 KiB each way, close; the server sees 203.0.113.10")
  func tcp() throws {
    let chain = try netnsChain()
    defer { chain.shutdown() }
    let listener = try NamespaceSocket.tcp(in: chain.inet.namespace)
    try listener.bind(inetServer, 8080)
    try listener.listen()
    let client = try NamespaceSocket.tcp(in: chain.vm.namespace)
    try client.connect(inetServer, 8080)
    let (conn, peerIP, peerPort) = try listener.accept()
    #expect(peerIP == natIP)
    #expect(natPorts.contains(Int(peerPort)))
    let up = (0..<65_536).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    try client.writeAll(up)
    #expect(try conn.readExactly(up.count) == up)
    let down = up.reversed().map { $0 ^ 0x5A }
    try conn.writeAll(down)
    #expect(try client.readExactly(down.count) == down)
    #expect(shutdown(client.fd, Int32(SHUT_WR)) == 0)
    var byte: UInt8 = 0
    #expect(recv(conn.fd, &byte, 1, 0) == 0)  // orderly FIN through the NAT
    #expect(chain.agent.stats().global.translatedIn > 40)
  }

  @Test("path MTU: a 1500-byte DF reply toward the VM gets fragmentation-needed (MTU 1400) at the server")
  func pathMTU() throws {
    let chain = try netnsChain()
    defer { chain.shutdown() }
    let server = try NamespaceSocket.udp(in: chain.inet.namespace)
    try server.bind(inetServer, 7001)
    server.setDontFragment()
    let client = try NamespaceSocket.udp(in: chain.vm.namespace)
    #expect(client.send(Array("hello".utf8), to: inetServer, 7001) == 0)
    let request = try #require(server.receiveFrom(), "\(chain.report())")
    #expect(request.ip == natIP)

    // 1472 bytes of payload = 1500 bytes: fine for the Internet side's link, too big for the VM's.
    // The VM's bridge answers with fragmentation-needed; the agent translates it back (RFC 5508);
    // the edge sends it up; the server's kernel learns the path MTU, and then refuses (EMSGSIZE)
    // to send that much with DF.
    let big = [UInt8](repeating: 0xAB, count: 1472)
    var refused = false
    let deadline = ContinuousClock.now + .seconds(5)
    var attempts = 0
    while ContinuousClock.now < deadline, attempts < 100 {
      attempts += 1
      let e = server.send(big, to: request.ip, request.port)
      if e == EMSGSIZE {
        refused = true
        break
      }
      #expect(e == 0)
      usleep(50_000)
    }
    #expect(refused, "\(chain.report())")
    #expect(eventually {
      let vmStats = chain.vm.bridge.stats()
      return vmStats.fragmentationNeededSent >= 1 && vmStats.drops.tooBigDontFragment >= 1
    }, "\(chain.vm.bridge.stats())")
    #expect(eventually { chain.agent.stats().global.icmpErrorsTranslated >= 1 }, "\(chain.report())")
    let route = try chain.inet.namespace.ip(["route", "get", natIP.description]).standardOutput
    #expect(route.contains("mtu 1400"), "\(route)")

    // 1400 bytes pass, and the VM gets them (and never got a 1500-byte one).
    let fits = [UInt8](repeating: 0xCD, count: 1372)
    #expect(server.send(fits, to: request.ip, request.port) == 0)
    let got = try #require(client.receiveFrom(), "\(chain.report())")
    #expect(got.bytes == fits)
  }
}
