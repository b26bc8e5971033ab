/// A queue of partial aggregates whose merged total is known after every push
/// and pop in amortized constant time (the two-stack technique): a sliding
/// window moves one tile at a time without re-merging the tiles it keeps.
struct SlidingWindow {
    /// Popped from the end; each entry carries the merge of itself and everything below it.
    private var front: [PartialAggregate] = []
    private var back: [PartialAggregate] = []
    private var backTotal = PartialAggregate()

    /// How many tiles it holds.
    var count: Int { front.count + back.count }

    /// Adds the newest tile.
    mutating func push(_ tile: PartialAggregate) {
        back.append(tile)
        backTotal = backTotal.merged(with: tile)
    }

    /// Drops the oldest tile.
    mutating func popOldest() {
        if front.isEmpty {
            // Move the back stack over, newest first, so the oldest ends on top.
            var running = PartialAggregate()
            for tile in back.reversed() {
                running = tile.merged(with: running)
                front.append(running)
            }
            back.removeAll(keepingCapacity: true)
            backTotal = PartialAggregate()
        }
        front.removeLast()
    }

    /// The merge of every tile held.
    var total: PartialAggregate { (front.last ?? PartialAggregate()).merged(with: backTotal) }
}
