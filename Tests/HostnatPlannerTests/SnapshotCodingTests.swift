import HostnatAddressing
import Foundation
import Testing

@testable import HostnatPlanner

@Suite struct SnapshotCodingTests {
  @Test func snapshotSurvivesJSON() throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.dynamic([Fixture.ip(1), Fixture.ip(2)])], instances: Fixture.vms(0..<20)))
    _ = planner.grant(NICRef(instance: "vm3", gateway: "gw"))
    try planner.removeInstance("vm4")
    let data = try JSONEncoder().encode(planner.snapshot())
    let decoded = try JSONDecoder().decode(NATPlannerSnapshot.self, from: data)
    #expect(decoded == planner.snapshot())
    let restored = try NATPlanner(intent: planner.intent, restoring: decoded)
    #expect(restored.allAllocations == planner.allAllocations)
    #expect(restored.quarantinedBlocks == planner.quarantinedBlocks)
  }
}
