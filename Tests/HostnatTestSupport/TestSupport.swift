// What every test target needs once: a seeded generator, address literals, and a bounded wait.
public import HostnatAddressing
import HostnatPackets
import Foundation

/// Reproducible random inputs for property and fuzz tests: the modules' own SplitMix64, so a
/// failing seed reproduces the same packets, intents and flows on every platform. A wrapper rather
/// than an alias, so that test targets need not import HostnatPackets to seed it.
public struct SeededRNG: RandomNumberGenerator {
  private var generator: SplitMix64

  public init(seed: UInt64) { generator = SplitMix64(seed: seed) }

  public mutating func next() -> UInt64 { generator.next() }
}

/// An address literal in a test; a typo in one is a bug in the test, so it stops the run.
public func ip(_ text: String) -> IPv4Address {
  guard let address = IPv4Address(text) else { preconditionFailure("bad address literal \(text)") }
  return address
}

/// Polls `condition` every 2 ms until it holds or `within` has passed; the result says which.
/// For counters that a packet loop publishes after its batch, a moment after the effect is seen.
public func eventually(within: Duration = .seconds(3), _ condition: () -> Bool) -> Bool {
  let deadline = ContinuousClock.now + within
  while ContinuousClock.now < deadline {
    if condition() { return true }
    Thread.sleep(forTimeInterval: 0.002)
  }
  return condition()
}
