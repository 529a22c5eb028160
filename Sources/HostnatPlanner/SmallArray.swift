/// An array that keeps its first element inline. Most NICs hold one block and most instances one
/// allocation unit, so this saves a heap allocation per VM in a full plan of 100,000 VMs.
struct SmallArray<Element>: RandomAccessCollection, MutableCollection, ExpressibleByArrayLiteral {
  private var head: Element?
  private var tail: [Element] = []

  init() {}

  init(arrayLiteral elements: Element...) {
    for element in elements { append(element) }
  }

  init(_ elements: some Sequence<Element>) {
    for element in elements { append(element) }
  }

  var startIndex: Int { 0 }
  var endIndex: Int { head == nil ? 0 : tail.count + 1 }

  subscript(position: Int) -> Element {
    get { position == 0 ? head! : tail[position - 1] }
    set {
      if position == 0 {
        precondition(head != nil, "index out of range")
        head = newValue
      } else {
        tail[position - 1] = newValue
      }
    }
  }

  mutating func append(_ element: Element) {
    if head == nil { head = element } else { tail.append(element) }
  }

  @discardableResult
  mutating func removeLast() -> Element {
    if tail.isEmpty {
      let element = head!
      head = nil
      return element
    }
    return tail.removeLast()
  }

  @discardableResult
  mutating func remove(at position: Int) -> Element {
    guard position == 0 else { return tail.remove(at: position - 1) }
    let element = head!
    head = tail.isEmpty ? nil : tail.removeFirst()
    return element
  }

  mutating func removeAll(where shouldRemove: (Element) -> Bool) {
    self = SmallArray(filter { !shouldRemove($0) })
  }
}

extension SmallArray: Sendable where Element: Sendable {}
