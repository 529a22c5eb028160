public import HostnatAddressing
public import HostnatPackets

/// The emulated Internet: every configured server address, answering packets the edge hands over.
/// Pure and deterministic: time comes from the caller, TCP ISNs from a seeded generator.
public final class InternetServers: PacketEndpoint {
  /// Source of the probe's unsolicited datagram from "another host" (not a configured server).
  public static let unsolicitedSourceAddress = IPv4Address(203, 0, 113, 99)
  public static var labDefault: [ServerSpec] { ServerSpec.labDefault }

  public internal(set) var counters = InternetCounters()
  public let servers: [ServerSpec]
  let config: InternetConfig
  private var services: [IPv4Address: UInt8] = [:]
  let scratch = PacketScratch()
  var rng: SplitMix64
  var connections: [ConnectionKey: ServerConnection] = [:]
  /// Earliest moment any connection timer may fire; `tick` is a no-op before it.
  var nextDeadline: UInt64 = .max
  /// Connections whose timer fired in this tick (reused to avoid allocating).
  var due: [ConnectionKey] = []

  public init(servers: [ServerSpec], config: InternetConfig = InternetConfig()) {
    self.servers = servers
    self.config = config
    rng = SplitMix64(seed: config.seed)
    for server in servers {
      services[server.ip, default: 0] |= server.services.reduce(0) { $0 | $1.bit }
    }
    due.reserveCapacity(64)
  }

  /// Open TCP connections (any state).
  public var connectionCount: Int { connections.count }

  public func receive(_ packet: UnsafeRawBufferPointer, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    counters.received += 1
    let buffer = UnsafeMutableRawBufferPointer(mutating: packet)
    guard let ip = try? IPv4PacketView(validating: buffer), ip.headerChecksumIsValid,
      !ip.isNonFirstFragment, !ip.moreFragments
    else {
      counters.malformed += 1
      return
    }
    guard let offered = services[ip.destination] else {
      counters.noSuchServer += 1
      return
    }
    switch ip.protocolNumber {
    case IPProtocol.icmp: handleICMP(ip, offered: offered, emit: emit)
    case IPProtocol.udp: handleUDP(ip, offered: offered, emit: emit)
    case IPProtocol.tcp: handleTCP(ip, offered: offered, now: now, emit: emit)
    default: counters.malformed += 1
    }
  }

  func send(_ packet: UnsafeRawBufferPointer, _ emit: (UnsafeRawBufferPointer) -> Void) {
    counters.replied += 1
    emit(packet)
  }

  // MARK: ICMP

  private func handleICMP(_ ip: IPv4PacketView, offered: UInt8, emit: (UnsafeRawBufferPointer) -> Void) {
    guard let icmp = try? ICMPMessageView(validating: ip.payload), icmp.checksumIsValid else {
      counters.malformed += 1
      return
    }
    guard icmp.type == ICMPType.echoRequest else {
      // Errors and replies addressed to a server need no answer (a host never answers an ICMP error).
      counters.icmpIgnored += 1
      return
    }
    guard offered & ServiceKind.icmpEcho.bit != 0 else {
      counters.noSuchService += 1
      return
    }
    let body = UnsafeRawBufferPointer(rebasing: icmp.bytes[8...])
    let n = scratch.copy(body, to: PacketScratch.icmpPayloadOffset)
    let rest = UInt32(icmp.bytes.loadBE32(at: 4))
    counters.icmpEchoReplies += 1
    send(
      scratch.icmp(
        source: ip.destination, destination: ip.source, type: ICMPType.echoReply, code: 0, rest: rest,
        payloadCount: n), emit)
  }

  // MARK: UDP

  private func handleUDP(_ ip: IPv4PacketView, offered: UInt8, emit: (UnsafeRawBufferPointer) -> Void) {
    guard let udp = try? UDPHeaderView(validating: ip.payload), udp.checksumIsValid(pseudoHeaderSum: ip.pseudoHeaderSum)
    else {
      counters.malformed += 1
      return
    }
    let client = ip.source
    let server = ip.destination
    let clientPort = udp.sourcePort
    let port = udp.destinationPort
    let payload = UnsafeRawBufferPointer(rebasing: udp.bytes[8...])
    let out = PacketScratch.udpPayloadOffset
    func reply(_ count: Int, from sourcePort: UInt16 = port, address: IPv4Address = server) {
      send(
        scratch.udp(source: address, destination: client, sourcePort: sourcePort, destinationPort: clientPort,
          payloadCount: count), emit)
    }
    if port == WellKnownPorts.echo, offered & ServiceKind.udpEcho.bit != 0 {
      counters.udpEchoReplies += 1
      reply(scratch.copy(payload, to: out))
    } else if port == WellKnownPorts.whoami, offered & ServiceKind.whoami.bit != 0 {
      counters.whoamiReplies += 1
      reply(writeEndpoint(client, clientPort, into: scratch.buffer, at: out) - out)
    } else if port == WellKnownPorts.stun, offered & ServiceKind.stun.bit != 0 {
      guard let count = STUN.bindingResponse(
        request: payload, client: client, clientPort: clientPort, into: scratch.area(at: out))
      else {
        counters.stunIgnored += 1
        return
      }
      counters.stunResponses += 1
      reply(count)
    } else if port == WellKnownPorts.filteringProbe, offered & ServiceKind.filteringProbe.bit != 0 {
      counters.probeAcks += 1
      reply(scratch.copy("probe-ack", to: out))
      // Two datagrams the client never addressed: an endpoint-dependent filter must drop both.
      counters.unsolicitedSent += 2
      reply(scratch.copy("unsolicited", to: out), from: WellKnownPorts.filteringProbeAlternate)
      reply(scratch.copy("unsolicited", to: out), address: InternetServers.unsolicitedSourceAddress)
    } else {
      counters.noSuchService += 1
      counters.udpPortUnreachable += 1
      // Quote as much as fits in 576 bytes, as Linux does (RFC 1812 §4.3.2.3).
      let quoted = scratch.copy(UnsafeRawBufferPointer(ip.bytes), to: PacketScratch.icmpPayloadOffset)
      send(
        scratch.icmp(
          source: server, destination: client, type: ICMPType.destinationUnreachable, code: 3, rest: 0,
          payloadCount: min(quoted, 576 - 28)), emit)
    }
  }
}

/// STUN (RFC 5389) binding: the only method the emulated server answers.
enum STUN {
  static let magicCookie: UInt32 = 0x2112_A442
  static let bindingRequest: UInt16 = 0x0001
  static let bindingSuccess: UInt16 = 0x0101
  static let mappedAddress: UInt16 = 0x0001
  static let xorMappedAddress: UInt16 = 0x0020

  /// Writes a binding success response for a valid binding request into `out`; nil (ignore) for
  /// anything malformed, as RFC 5389 §7.3 asks.
  static func bindingResponse(
    request: UnsafeRawBufferPointer, client: IPv4Address, clientPort: UInt16, into out: UnsafeMutableRawBufferPointer
  ) -> Int? {
    guard request.count >= 20, request[0] & 0xC0 == 0, request.loadBE16(at: 0) == bindingRequest,
      request.loadBE32(at: 4) == magicCookie
    else { return nil }
    let length = Int(request.loadBE16(at: 2))
    guard length % 4 == 0, length == request.count - 20 else { return nil }
    // Attributes must tile the body exactly (each value padded to 4 bytes).
    var offset = 20
    while offset < request.count {
      guard offset + 4 <= request.count else { return nil }
      let valueLength = Int(request.loadBE16(at: offset + 2))
      offset += 4 + (valueLength + 3) & ~3
    }
    guard offset == request.count else { return nil }
    out.storeBE16(bindingSuccess, at: 0)
    out.storeBE16(24, at: 2)
    out.storeBE32(magicCookie, at: 4)
    UnsafeMutableRawBufferPointer(rebasing: out[8..<20]).copyMemory(from: UnsafeRawBufferPointer(rebasing: request[8..<20]))
    out.storeBE16(mappedAddress, at: 20)
    out.storeBE16(8, at: 22)
    out.storeBE16(0x0001, at: 24)  // reserved 0, family IPv4
    out.storeBE16(clientPort, at: 26)
    out.storeBE32(client.value, at: 28)
    out.storeBE16(xorMappedAddress, at: 32)
    out.storeBE16(8, at: 34)
    out.storeBE16(0x0001, at: 36)
    out.storeBE16(clientPort ^ UInt16(magicCookie >> 16), at: 38)
    out.storeBE32(client.value ^ magicCookie, at: 40)
    return 44
  }
}
