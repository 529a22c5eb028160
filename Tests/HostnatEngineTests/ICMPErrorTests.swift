import HostnatAddressing
import HostnatEngine
import HostnatPackets
import HostnatTestSupport
import Testing

/// ICMP errors in both directions (RFC 5508 REQ-3..6) for the quotes `TranslationTests` leaves out:
/// UDP (whose quoted checksum is fixed when present) and echo messages.
@Suite struct ICMPErrorTests {
  let router = ip("198.51.100.1")

  /// A fresh engine whose VM has pinged the server: the request as sent and as it left.
  func pinged() throws -> (engine: NATEngine, ping: [UInt8], out: [UInt8]) {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let ping = PacketBuilder.icmpEcho(source: vmIP, destination: server, identifier: 0x4242, sequence: 1, payload: [7])
    return (engine, ping, run(engine, outbound: true, ping, now: 0).1)
  }

  @Test(arguments: [28, 40])
  func inboundErrorQuotingUDP(quotedBytes: Int) throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let query = PacketBuilder.udp(source: vmIP, destination: server, sourcePort: 5000, destinationPort: 53, payload: [1, 2, 3, 4])
    let (_, out) = run(engine, outbound: true, query, now: 0)
    let error = PacketBuilder.icmpError(source: router, destination: natIP, type: 3, code: 3, quoting: out, quotedBytes: quotedBytes)
    let (v, back) = run(engine, outbound: false, error, now: 1)
    #expect(v == .forward)
    #expect(back == PacketBuilder.icmpError(source: router, destination: vmIP, type: 3, code: 3, quoting: query, quotedBytes: quotedBytes))
    #expect(engine.globalCounters.icmpErrorsTranslated == 1 && engine.counters(forVM: "vm-a")?.packetsIn == 1)
  }

  @Test func inboundErrorQuotingAnEchoRequest() throws {
    let (engine, ping, out) = try pinged()
    let error = PacketBuilder.icmpError(source: router, destination: natIP, type: 11, code: 0, quoting: out)
    let (v, back) = run(engine, outbound: false, error, now: 1)
    #expect(v == .forward)
    #expect(back == PacketBuilder.icmpError(source: router, destination: vmIP, type: 11, code: 0, quoting: ping))
    _ = expectValid(back)
    // The same error quoting an echo reply is about no packet the NAT sent.
    var reply = out
    reply[20] = ICMPType.echoReply
    let stray = PacketBuilder.icmpError(source: router, destination: natIP, type: 11, code: 0, quoting: reply)
    #expect(run(engine, outbound: false, stray, now: 1).0 == .drop(.unmatchedICMPError))
  }

  @Test func outboundErrorQuotingAnEchoReply() throws {
    let (engine, _, out) = try pinged()
    let natID = try #require(ports(expectValid(out))).0
    let reply = PacketBuilder.icmpEcho(source: server, destination: natIP, type: ICMPType.echoReply, identifier: natID, sequence: 1)
    let (_, delivered) = run(engine, outbound: false, reply, now: 1)
    // The VM complains about the reply it got: the error leaves from the NAT IP, quoting the reply as
    // the server sent it.
    let error = PacketBuilder.icmpError(source: vmIP, destination: server, type: 12, code: 0, quoting: delivered)
    let (v, sent) = run(engine, outbound: true, error, now: 2)
    #expect(v == .forward)
    #expect(sent == PacketBuilder.icmpError(source: natIP, destination: server, type: 12, code: 0, quoting: reply))
    _ = expectValid(sent)
    // An error from another address than the quoted destination matches nothing.
    let spoofed = PacketBuilder.icmpError(source: ip("10.0.0.3"), destination: server, type: 12, code: 0, quoting: delivered)
    #expect(run(engine, outbound: true, spoofed, now: 2).0 == .drop(.unmatchedICMPError))
  }
}
