import HostnatAddressing
import HostnatEngine
import HostnatPackets
import HostnatTestSupport
import Testing

func cidr(_ text: String) -> IPv4CIDR {
  guard let c = IPv4CIDR(text) else { preconditionFailure("bad CIDR literal \(text)") }
  return c
}

let second: UInt64 = 1_000_000_000
let vmIP = ip("10.0.0.2")
let natIP = ip("192.0.2.10")
let server = ip("203.0.113.80")

/// The Cloud NAT translation example: 10.0.0.2 owns 34000..<34064 on 192.0.2.10.
func exampleVM(
  id: String = "vm-a", address: IPv4Address = vmIP, blocks: [PortBlock] = [PortBlock(natIP: natIP, ports: 34000..<34064)],
  gateway: GatewaySettings = .init()
) -> VMConfig {
  VMConfig(
    id: id, primaryIP: address, natSourceRanges: [IPv4CIDR(address, prefixLength: 32)!], portBlocks: blocks,
    gateway: gateway)
}

/// Runs one packet through the engine on a copy and returns the verdict and resulting bytes.
func run(_ engine: NATEngine, outbound: Bool, _ packet: [UInt8], now: UInt64) -> (Verdict, [UInt8]) {
  var bytes = packet
  let verdict = bytes.withUnsafeMutableBytes { raw in
    outbound ? engine.translateOutbound(raw, now: now) : engine.translateInbound(raw, now: now)
  }
  return (verdict, bytes)
}

/// Reply to a TCP/UDP packet: addresses and ports swapped (checksums are unaffected by the swap).
func reversed(_ packet: [UInt8]) -> [UInt8] {
  var b = packet
  let hl = Int(b[0] & 0x0F) * 4
  for i in 0..<4 { b.swapAt(12 + i, 16 + i) }
  if b[9] == 6 || b[9] == 17 {
    b.swapAt(hl, hl + 2)
    b.swapAt(hl + 1, hl + 3)
  }
  return b
}

/// Fully verifies every checksum (IP, TCP/UDP/ICMP) of a translated packet.
func expectValid(_ packet: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> ParsedPacket? {
  do {
    return try PacketParser.parse(packet, verifyChecksums: true)
  } catch {
    Issue.record("translated packet does not verify: \(error)", sourceLocation: sourceLocation)
    return nil
  }
}

func ports(_ p: ParsedPacket?) -> (UInt16, UInt16)? {
  switch p?.transport {
  case .tcp(let s, let d, _, _, _): return (s, d)
  case .udp(let s, let d, _): return (s, d)
  case .icmpEcho(_, let id, _): return (id, 0)
  default: return nil
  }
}
