import Foundation
import HostnatAddressing
import Testing

@Suite struct AddressTests {
  @Test(arguments: [
    ("0.0.0.0", UInt32(0)), ("10.0.0.1", 0x0A00_0001), ("255.255.255.255", 0xFFFF_FFFF), ("192.0.2.10", 0xC000_020A),
  ])
  func parsesDottedQuad(text: String, value: UInt32) throws {
    let address = try #require(IPv4Address(text))
    #expect(address.value == value)
    #expect(address.description == text)
  }

  @Test(arguments: ["", "1.2.3", "1.2.3.4.5", "256.0.0.1", "01.2.3.4", "1..2.3", "1.2.3.4 ", "a.b.c.d", "-1.2.3.4", "1.2.3."])
  func rejectsMalformed(text: String) {
    #expect(IPv4Address(text) == nil)
  }

  @Test func cidrParseNormalisesAndContains() throws {
    let cidr = try #require(IPv4CIDR("10.0.0.77/24"))
    #expect(cidr.description == "10.0.0.0/24")
    #expect(cidr.contains(ip("10.0.0.255")))
    #expect(!cidr.contains(ip("10.0.1.0")))
    #expect(cidr.size == 256)
    #expect(cidr.last == ip("10.0.0.255"))
    #expect(IPv4CIDR("0.0.0.0/0")?.contains(ip("8.8.8.8")) == true)
    #expect(IPv4CIDR("10.0.0.1")?.prefixLength == 32)
  }

  @Test(arguments: ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0/8", "10.0.0.0/8/1", "10.0.0.0/ 8"])
  func cidrRejectsMalformed(text: String) {
    #expect(IPv4CIDR(text) == nil)
  }

  @Test(arguments: [
    ("10.0.0.0/8", "10.1.0.0/16", true), ("10.1.0.0/16", "10.0.0.0/8", true), ("10.0.0.0/24", "10.0.1.0/24", false),
    ("0.0.0.0/0", "192.0.2.1/32", true), ("192.0.2.1/32", "192.0.2.2/32", false),
  ])
  func overlaps(a: String, b: String, expected: Bool) throws {
    let x = try #require(IPv4CIDR(a))
    let y = try #require(IPv4CIDR(b))
    #expect(x.overlaps(y) == expected)
  }
}

private func ip(_ text: String) -> IPv4Address {
  guard let address = IPv4Address(text) else { preconditionFailure("bad address literal \(text)") }
  return address
}

@Suite struct StrictPrefixTests {
  // Subnet and alias ranges are read strictly: host bits are refused, not cleared.
  @Test(arguments: [
    ("10.0.0.0/24", true), ("10.0.0.1/24", false), ("10.0.0.7", true), ("0.0.0.0/0", true), ("1.0.0.0/0", false),
    ("10.0.0.0/33", false), ("10.0.0.0/", false), ("/24", false), ("", false), ("10.0.0.0/24/1", false),
    ("10.0.0.0/024", false),
  ])
  func strictParsing(text: String, valid: Bool) {
    #expect((IPv4CIDR(strict: text) != nil) == valid)
    if valid { #expect(IPv4CIDR(strict: text) == IPv4CIDR(text)) }
  }

  @Test func strictFromParts() {
    #expect(IPv4CIDR(strict: ip("10.1.0.0"), prefixLength: 16) != nil)
    #expect(IPv4CIDR(strict: ip("10.1.0.1"), prefixLength: 16) == nil)
    #expect(IPv4CIDR(strict: ip("10.1.0.0"), prefixLength: 33) == nil)
  }

  @Test func containsPrefix() throws {
    let wide = try #require(IPv4CIDR("10.0.0.0/16"))
    let narrow = try #require(IPv4CIDR("10.0.4.0/24"))
    let other = try #require(IPv4CIDR("10.1.0.0/16"))
    #expect(wide.contains(narrow))
    #expect(!narrow.contains(wide))
    #expect(!wide.contains(other))
    #expect(wide.overlaps(narrow) && narrow.overlaps(wide) && !wide.overlaps(other))
  }
}

@Suite struct SocketAddressTests {
  @Test(arguments: [
    ("127.0.0.1:4000", "127.0.0.1:4000"), ("10.0.0.1:0", "10.0.0.1:0"), ("1.2.3.4:65535", "1.2.3.4:65535"),
  ])
  func parses(text: String, expected: String) throws {
    #expect(try #require(SocketAddress(text)).description == expected)
  }

  @Test(arguments: ["127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "localhost:80", "::1:80", " 1.2.3.4:80", "1.2.3.4:8 0"])
  func refuses(text: String) {
    #expect(SocketAddress(text) == nil)
  }

  @Test func flagParsing() throws {
    #expect(try SocketAddress.parse("localhost:9000", flag: "--controller") == SocketAddress("127.0.0.1:9000"))
    #expect(try SocketAddress.parse("127.0.0.1:0", flag: "--listen", allowPortZero: true).port == 0)
    let error = #expect(throws: FieldError.self) { try SocketAddress.parse("127.0.0.1:0", flag: "--controller") }
    #expect(error?.field == "--controller")
    #expect(error?.reason.contains("1-65535") == true)
    #expect(throws: FieldError.self) { try SocketAddress.parse("example.com:80", flag: "--controller") }
  }

  @Test func codableAsText() throws {
    let address = try #require(SocketAddress("192.0.2.1:53"))
    let data = try JSONEncoder().encode([address])
    #expect(String(decoding: data, as: UTF8.self) == #"["192.0.2.1:53"]"#)
    #expect(try JSONDecoder().decode([SocketAddress].self, from: data) == [address])
    #expect(throws: DecodingError.self) { try JSONDecoder().decode([SocketAddress].self, from: Data(#"["nope"]"#.utf8)) }
  }
}

@Suite struct FirewallSpecTests {
  @Test func protocols() {
    #expect(FirewallSpec.protocolNumber("TCP") == .some(6))
    #expect(FirewallSpec.protocolNumber("all") == .some(nil))
    #expect(FirewallSpec.protocolNumber("47") == .some(47))
    #expect(FirewallSpec.protocolNumber("gre") == nil)
  }

  @Test func portRanges() {
    #expect(FirewallSpec.portRange("80") == 80...80)
    #expect(FirewallSpec.portRange("8000-8080") == 8000...8080)
    #expect(FirewallSpec.portRange("90-80") == nil)
    #expect(FirewallSpec.portRange("1-2-3") == nil)
    #expect(FirewallSpec.portRange("") == nil)
  }
}
