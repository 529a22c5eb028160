import HostnatAddressing
import HostnatPackets

/// An inbound packet reduced to what flows match and read.
struct Inbound {
  var proto: UInt8
  var remote: IPv4Address
  /// 0 for ICMP.
  var remotePort: UInt16
  /// The ICMP echo identifier for ICMP.
  var localPort: UInt16
  /// UDP or TCP payload, or the ICMP echo data after the 8-byte header.
  var payload: UnsafeRawBufferPointer
  var segment: InboundSegment?
  var icmpSequence: UInt16 = 0
}

/// An address and port as a flow saw it (a NAT mapping, a probe's sender): recorded per reply
/// without allocating; text ("a.b.c.d:port") only in reports.
struct Endpoint: Hashable, CustomStringConvertible {
  var ip: IPv4Address
  var port: UInt16
  var description: String { "\(ip):\(port)" }
}

/// One running flow. Subclasses implement the protocol; the base class paces sends.
class Flow {
  let spec: FlowSpec
  let flowIndex: Int
  unowned let workload: Workload
  let interval: UInt64
  var nextSendAt: UInt64 = .max
  var icmpErrors = 0

  init(spec: FlowSpec, index: Int, workload: Workload) {
    self.spec = spec
    flowIndex = index
    self.workload = workload
    let rate = spec.ratePerSecond.isFinite && spec.ratePerSecond > 0 ? spec.ratePerSecond : 0
    interval = rate > 0 ? UInt64(max(1_000.0, 1e9 / rate)) : .max
  }

  func start(now: UInt64, jitter: UInt64) {
    guard interval != .max else { return }
    nextSendAt = now &+ jitter % interval
  }

  /// Calls `send` for each due slot, at most `maxBurstPerTick` times; a backlog beyond that is
  /// skipped rather than sent in a flood.
  func pace(now: UInt64, _ send: () -> Void) {
    guard !workload.stopped, nextSendAt != .max else { return }
    var n = 0
    while now >= nextSendAt, n < workload.spec.maxBurstPerTick {
      send()
      nextSendAt &+= interval
      n += 1
    }
    if now >= nextSendAt { nextSendAt = now &+ interval }
  }

  func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {}
  /// Exact match on this flow's endpoints.
  func matches(proto: UInt8, localPort: UInt16, remote: IPv4Address, remotePort: UInt16) -> Bool {
    proto == protocolNumber && localPort == spec.sourcePort && remote == spec.server && remotePort == spec.serverPort
  }
  /// Second-chance match for packets from endpoints the flow never addressed.
  func claims(proto: UInt8, localPort: UInt16) -> Bool { false }
  func receive(_ packet: Inbound, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {}
  func report(now: UInt64) -> FlowReport { FlowReport(id: spec.id, kind: spec.kind) }
  var drained: Bool { true }
  var protocolNumber: UInt8 {
    switch spec.kind {
    case .ping: IPProtocol.icmp
    case .tcpEcho, .tcpChurn: IPProtocol.tcp
    default: IPProtocol.udp
    }
  }
}

/// Request/reply flows over UDP or ICMP: echo, ping, whoami, STUN, filtering probe.
final class DatagramFlow: Flow {
  var tracker = RequestTracker()
  var corrupt = 0
  var mappings: Set<Endpoint> = []
  var latestMapping: Endpoint? = nil
  var unsolicited = 0
  var unsolicitedFrom: Set<Endpoint> = []
  var payloadCount: Int { max(8, min(spec.payloadBytes, 1_400)) }
  static let tag: UInt32 = 0x686E_776C  // "hnwl"

  @inline(__always) func pattern(_ seq: UInt32, _ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: seq &* 7 &+ UInt32(i)) }

  override func claims(proto: UInt8, localPort: UInt16) -> Bool {
    spec.kind == .filteringProbe && proto == IPProtocol.udp && localPort == spec.sourcePort
  }

  override func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    let w = workload
    tracker.expire(now: now, timeout: w.spec.lossTimeout) { w.phases[$0].lost += 1 }
    pace(now: now) { sendOne(now: now, emit: emit) }
  }

  private func sendOne(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    let w = workload
    let seq = tracker.send(now: now, phase: w.currentPhase) { w.phases[$0].lost += 1 }
    w.phases[w.currentPhase].sent += 1
    let s = w.scratch
    let out = s.area(at: PacketScratch.udpPayloadOffset)
    let src = w.ip
    switch spec.kind {
    case .udpEcho:
      let n = payloadCount
      out.storeBE32(DatagramFlow.tag ^ UInt32(flowIndex), at: 0)
      out.storeBE32(seq, at: 4)
      for i in 8..<n { out[i] = pattern(seq, i) }
      emit(s.udp(source: src, destination: spec.server, sourcePort: spec.sourcePort, destinationPort: 7, payloadCount: n))
    case .ping:
      let data = s.area(at: PacketScratch.icmpPayloadOffset)
      data.storeBE32(seq, at: 0)
      for i in 4..<32 { data[i] = pattern(seq, i) }
      emit(
        s.icmp(
          source: src, destination: spec.server, type: ICMPType.echoRequest, code: 0,
          rest: UInt32(spec.sourcePort) << 16 | (seq & 0xFFFF), payloadCount: 32))
    case .whoami:
      emit(
        s.udp(source: src, destination: spec.server, sourcePort: spec.sourcePort, destinationPort: 80,
          payloadCount: s.copy("whoami\n", to: PacketScratch.udpPayloadOffset)))
    case .stun:
      out.storeBE16(0x0001, at: 0)
      out.storeBE16(0, at: 2)
      out.storeBE32(0x2112_A442, at: 4)
      out.storeBE32(DatagramFlow.tag, at: 8)
      out.storeBE32(UInt32(flowIndex), at: 12)
      out.storeBE32(seq, at: 16)
      emit(s.udp(source: src, destination: spec.server, sourcePort: spec.sourcePort, destinationPort: 3478, payloadCount: 20))
    case .filteringProbe:
      emit(
        s.udp(source: src, destination: spec.server, sourcePort: spec.sourcePort, destinationPort: 9999,
          payloadCount: s.copy("probe", to: PacketScratch.udpPayloadOffset)))
    case .tcpEcho, .tcpChurn:
      break
    }
  }

  override func receive(_ packet: Inbound, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    let w = workload
    let timeout = w.spec.lossTimeout
    let p = packet.payload
    if spec.kind == .filteringProbe, packet.remote != spec.server || packet.remotePort != spec.serverPort {
      unsolicited += 1
      if unsolicitedFrom.count < 64 { unsolicitedFrom.insert(Endpoint(ip: packet.remote, port: packet.remotePort)) }
      return
    }
    var outcome = RequestTracker.Outcome.unknown
    switch spec.kind {
    case .udpEcho:
      guard p.count == payloadCount, p.loadBE32(at: 0) == DatagramFlow.tag ^ UInt32(flowIndex) else {
        corrupt += 1
        return
      }
      let seq = p.loadBE32(at: 4)
      for i in 8..<p.count where p[i] != pattern(seq, i) {
        corrupt += 1
        return
      }
      outcome = tracker.reply(seq: seq, now: now, timeout: timeout) { w.phases[$0].lost += 1 }
    case .ping:
      guard p.count == 32, UInt16(truncatingIfNeeded: p.loadBE32(at: 0)) == packet.icmpSequence else {
        corrupt += 1
        return
      }
      let seq = p.loadBE32(at: 0)
      for i in 4..<32 where p[i] != pattern(seq, i) {
        corrupt += 1
        return
      }
      outcome = tracker.reply(seq: seq, now: now, timeout: timeout) { w.phases[$0].lost += 1 }
    case .whoami:
      guard let mapping = Self.parseEndpoint(p) else {
        corrupt += 1
        return
      }
      record(mapping)
      outcome = tracker.replyNewest(now: now, timeout: timeout) { w.phases[$0].lost += 1 }
    case .stun:
      guard let answer = Self.parseSTUN(p, flowIndex: flowIndex) else {
        corrupt += 1
        return
      }
      record(answer.1)
      outcome = tracker.reply(seq: answer.0, now: now, timeout: timeout) { w.phases[$0].lost += 1 }
    case .filteringProbe:
      guard p.elementsEqual("probe-ack".utf8) else {
        corrupt += 1
        return
      }
      outcome = tracker.replyNewest(now: now, timeout: timeout) { w.phases[$0].lost += 1 }
    case .tcpEcho, .tcpChurn:
      return
    }
    switch outcome {
    case .received: w.phases[w.currentPhase].received += 1
    case .unknown: corrupt += 1
    case .late, .duplicate: break
    }
  }

  private func record(_ mapping: Endpoint) {
    if mappings.count < 64 { mappings.insert(mapping) }
    latestMapping = mapping
  }

  /// "a.b.c.d:port" (strict dotted quad, 1-5 digit port) or nil. Allocates nothing: a dotted quad
  /// is at most 15 bytes, which a String holds inline.
  static func parseEndpoint(_ bytes: UnsafeRawBufferPointer) -> Endpoint? {
    guard bytes.count <= 21, let colon = bytes.lastIndex(of: UInt8(ascii: ":")), colon <= 15,
      let ip = IPv4Address(String(decoding: bytes[0..<colon], as: UTF8.self))
    else { return nil }
    let portText = bytes[(colon + 1)...]
    guard !portText.isEmpty, portText.count <= 5 else { return nil }
    var port = 0
    for digit in portText {
      guard digit >= 48 && digit <= 57 else { return nil }
      port = port * 10 + Int(digit - 48)
    }
    guard port <= 65_535 else { return nil }
    return Endpoint(ip: ip, port: UInt16(port))
  }

  /// A binding success response to one of our requests: its sequence number and the mapped
  /// address (XOR-MAPPED-ADDRESS preferred; when both are present they must agree).
  static func parseSTUN(_ p: UnsafeRawBufferPointer, flowIndex: Int) -> (UInt32, Endpoint)? {
    guard p.count >= 20, p.loadBE16(at: 0) == 0x0101, p.loadBE32(at: 4) == 0x2112_A442,
      Int(p.loadBE16(at: 2)) == p.count - 20, p.loadBE32(at: 8) == tag, p.loadBE32(at: 12) == UInt32(flowIndex)
    else { return nil }
    let seq = p.loadBE32(at: 16)
    var xor: (UInt32, UInt16)? = nil
    var plain: (UInt32, UInt16)? = nil
    var o = 20
    while o + 4 <= p.count {
      let type = p.loadBE16(at: o)
      let length = Int(p.loadBE16(at: o + 2))
      guard o + 4 + length <= p.count else { return nil }
      if (type == 0x0020 || type == 0x0001), length == 8, p[o + 5] == 0x01 {
        let port = p.loadBE16(at: o + 6)
        let address = p.loadBE32(at: o + 8)
        if type == 0x0020 {
          xor = (address ^ 0x2112_A442, port ^ 0x2112)
        } else {
          plain = (address, port)
        }
      }
      o += 4 + (length + 3) & ~3
    }
    guard let found = xor ?? plain else { return nil }
    if let plain, plain != found { return nil }
    return (seq, Endpoint(ip: IPv4Address(found.0), port: found.1))
  }

  override func report(now: UInt64) -> FlowReport {
    tracker.expire(now: now, timeout: workload.spec.lossTimeout) { workload.phases[$0].lost += 1 }
    var r = FlowReport(id: spec.id, kind: spec.kind)
    r.sent = tracker.sent
    r.received = tracker.received
    r.lost = tracker.lost
    r.late = tracker.late
    r.duplicate = tracker.duplicate
    r.corrupt = corrupt
    r.inFlight = tracker.inFlight
    r.icmpErrors = icmpErrors
    r.rttMaxMicros = Int(tracker.rttMax / 1_000)
    r.rttAvgMicros = tracker.received > 0 ? Int(tracker.rttSum / UInt64(tracker.received) / 1_000) : 0
    r.mappings = mappings.map(\.description).sorted()
    r.latestMapping = latestMapping?.description
    r.unsolicited = unsolicited
    r.unsolicitedFrom = unsolicitedFrom.map(\.description).sorted()
    return r
  }

  override var drained: Bool { tracker.inFlight == 0 }
}
