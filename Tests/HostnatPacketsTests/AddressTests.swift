import HostnatPackets
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
