/// A value that did not parse, for any named field or command-line flag (an address, a prefix, a
/// HOST:PORT, a list of services) or a value an intent may not hold: the field and why. Flag
/// errors use this, never a NACK reason; the planner's validation errors are this type too.
public struct FieldError: Error, Sendable, Hashable, CustomStringConvertible {
  public var field: String
  public var reason: String

  public init(field: String, reason: String) {
    self.field = field
    self.reason = reason
  }

  public var description: String { "\(field): \(reason)" }
}
