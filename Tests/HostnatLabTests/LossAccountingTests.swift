@testable import HostnatLab
import Testing

/// A reply that arrives after the loss timeout was delivered: the lab's checks count it late, not
/// lost (a starved CPU on a loaded machine delays it; the NAT did not drop it).
@Suite struct LossAccountingTests {
  @Test(arguments: [
    (lost: UInt64(0), late: UInt64(0), unanswered: UInt64(0), text: "100 sent, 0 lost"),
    (lost: 3, late: 2, unanswered: 1, text: "100 sent, 1 lost (2 more answered after the loss timeout)"),
    (lost: 2, late: 2, unanswered: 0, text: "100 sent, 0 lost (2 more answered after the loss timeout)"),
    // Late replies outside the measured window cannot make lost packets disappear twice.
    (lost: 1, late: 4, unanswered: 0, text: "100 sent, 0 lost (1 more answered after the loss timeout)"),
  ])
  func lateRepliesAreNotLost(c: (lost: UInt64, late: UInt64, unanswered: UInt64, text: String)) {
    var t = TrafficTotals()
    t.sent = 100
    t.lost = c.lost
    t.late = c.late
    #expect(t.unanswered == c.unanswered)
    #expect(t.lossText == c.text)
  }
}
