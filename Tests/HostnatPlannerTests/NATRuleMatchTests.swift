import HostnatAddressing
import Testing

@testable import HostnatPlanner

@Suite struct NATRuleMatchTests {
  @Test(arguments: [
    (#"destination.ip == "203.0.113.7""#, ["203.0.113.7/32"]),
    (#"destination.ip == '203.0.113.7'"#, ["203.0.113.7/32"]),
    (#"inIpRange(destination.ip, "203.0.113.0/28")"#, ["203.0.113.0/28"]),
    (#"destination.ip == "203.0.113.7" || inIpRange(destination.ip, "203.0.113.0/28")"#, ["203.0.113.0/28", "203.0.113.7/32"]),
    // Sorted by address then prefix length, duplicates removed.
    (#"inIpRange(destination.ip, "198.51.100.0/24") || destination.ip == "1.1.1.1" || destination.ip == "1.1.1.1""#, ["1.1.1.1/32", "198.51.100.0/24"]),
    (#"inIpRange(destination.ip, "10.0.0.0/8") || inIpRange(destination.ip, "10.0.0.0/16")"#, ["10.0.0.0/8", "10.0.0.0/16"]),
    // Parentheses and whitespace anywhere between tokens.
    (#"((destination.ip=="8.8.8.8")||(inIpRange( destination.ip ,"8.8.4.0/24" )))"#, ["8.8.4.0/24", "8.8.8.8/32"]),
    ("\n  destination.ip  ==  \"8.8.8.8\"\t|| destination.ip == \"0.0.0.0\"  ", ["0.0.0.0/32", "8.8.8.8/32"]),
    (#"inIpRange(destination.ip, "0.0.0.0/0")"#, ["0.0.0.0/0"]),
  ] as [(String, [String])])
  func accepted(match: String, expected: [String]) throws {
    #expect(try NATRuleMatch.destinationRanges(match) == expected)
  }

  @Test(arguments: [
    (#"destination.ip == "1.2.3.4" && destination.ip == "1.2.3.5""#, 28, #"unexpected "&&" at 28: only || is supported"#),
    (#"(destination.ip == "1.2.3.4" && destination.ip == "1.2.3.5")"#, 29, #"unexpected "&&" at 29: only || is supported"#),
    ("", 0, #"empty match expression: expected destination.ip == "a.b.c.d" or inIpRange(destination.ip, "a.b.c.d/n")"#),
    ("   ", 0, #"empty match expression: expected destination.ip == "a.b.c.d" or inIpRange(destination.ip, "a.b.c.d/n")"#),
    (#"destination.ip == "1.2.3.256""#, 18, #""1.2.3.256" at 18 is not an IPv4 address a.b.c.d"#),
    (#"destination.ip == "1.2.3.0/24""#, 18, #""1.2.3.0/24" at 18 is not an IPv4 address a.b.c.d (use inIpRange(destination.ip, "1.2.3.0/24") for a range)"#),
    (#"inIpRange(destination.ip, "203.0.113.1/28")"#, 26, #""203.0.113.1/28" at 26 has host bits set (did you mean "203.0.113.0/28"?)"#),
    (#"inIpRange(destination.ip, "203.0.113.0/33")"#, 26, #""203.0.113.0/33" at 26 is not an IPv4 range a.b.c.d/n"#),
    (#"inIpRange(destination.ip, "nope")"#, 26, #""nope" at 26 is not an IPv4 range a.b.c.d/n"#),
    (#"source.ip == "1.2.3.4""#, 0, #"unexpected "source.ip" at 0: expected destination.ip == "a.b.c.d" or inIpRange(destination.ip, "a.b.c.d/n")"#),
    (#"destination.ip != "1.2.3.4""#, 15, #"unexpected "!=" at 15: only == is supported after destination.ip"#),
    (#"destination.ip == 1.2.3.4"#, 18, #"unexpected "1.2.3.4" at 18: expected a quoted IPv4 address"#),
    (#"inIpRange(source.ip, "1.2.3.0/24")"#, 10, #"unexpected "source.ip" at 10: inIpRange can only test destination.ip"#),
    (#"inIpRange(destination.ip "1.2.3.0/24")"#, 25, #"unexpected ""1.2.3.0/24"" at 25: expected ",""#),
    (#"inIpRange(destination.ip, "1.2.3.0/24""#, 38, #"unexpected end of expression at 38: expected ")""#),
    (#"destination.ip == "1.2.3.4" ||"#, 30, #"unexpected end of expression at 30: expected destination.ip == "a.b.c.d" or inIpRange(destination.ip, "a.b.c.d/n")"#),
    (#"(destination.ip == "1.2.3.4""#, 28, #"unexpected end of expression at 28: expected ")" or ||"#),
    (#"destination.ip == "1.2.3.4")"#, 27, #"unexpected ")" at 27: no matching "(""#),
    (#"destination.ip == "1.2.3.4" destination.ip == "1.2.3.5""#, 28, #"unexpected "destination.ip" at 28: expected || or the end of the expression"#),
    (#"destination.ip == "1.2.3.4"#, 18, #"unterminated string starting at 18"#),
    (#"!(destination.ip == "1.2.3.4")"#, 0, #"unexpected "!" at 0: expected destination.ip == "a.b.c.d" or inIpRange(destination.ip, "a.b.c.d/n")"#),
  ] as [(String, Int, String)])
  func rejected(match: String, position: Int, message: String) {
    #expect(throws: NATRuleMatchError(position: position, reason: message)) { try NATRuleMatch.destinationRanges(match) }
  }
}
