import Foundation
import Tensor

/// Fits a smooth gain field g on the appearance grid so that reference ≈ g(x) · mapped, per
/// channel, from weighted sample pairs: the node values of the field, read between cell centres
/// bilinearly (as `FrameAppearance.gainAtSamples` reads them).
///
/// Why a fit of the nodes rather than a ratio per cell: the weights gather where the picture has
/// texture, so a cell's ratio describes the field where its texture is, not at its centre; placed
/// at the centre, those ratios flatten the field by a sixth to a third and misplace it by frame-varying
/// amounts. Here each sample speaks for the field at its own place.
///
/// The equations are the normal equations with one factor of `mapped` replaced by 1:
///   Σ_i w_i φ_k(x_i) (b_i − g(x_i) m_i) = 0 for every node k,
/// which for a single node is the ratio of weighted means Σ w b / Σ w m: unlike least squares,
/// it is not pulled towards 0 by noise in m. A membrane term (neighbouring nodes alike)
/// fills nodes with little or no data from their neighbours and keeps the fit of real video,
/// whose matches are noisy, from following the noise (its strength chosen per frame:
/// `FrameAppearance.crossValidated`).
struct GainFieldFit {
    let grid: AppearanceGrid
    /// The sample grid the pairs lie on: `width` × `height`, `samplesPerCell` per cell and axis.
    let width: Int, height: Int, samplesPerCell: Int
    /// Samples are summed in square bins of half a cell a side before the fit, each bin placed at
    /// the weighted centre of its samples: the field is smooth at that scale, and the fit's cost
    /// no longer depends on the frame's size.
    let bin: Int
    let binsWide: Int, binsHigh: Int
    /// Nodes are numbered along the grid's shorter side, so that the band is narrowest.
    let byColumns: Bool
    let bandwidth: Int

    init(grid: AppearanceGrid, width: Int, height: Int, samplesPerCell: Int) {
        self.grid = grid
        self.width = width
        self.height = height
        self.samplesPerCell = samplesPerCell
        bin = max(samplesPerCell / 2, 1)
        binsWide = (width + bin - 1) / bin
        binsHigh = (height + bin - 1) / bin
        byColumns = grid.height < grid.width
        bandwidth = min((byColumns ? grid.height : grid.width) + 1, grid.count - 1)
    }

    func node(_ gx: Int, _ gy: Int) -> Int { byColumns ? gx * grid.height + gy : gy * grid.width + gx }

    /// The sum of `confidence` (one plane of `width` × `height`) over each cell's samples, summed
    /// by bin first, then bin by bin into the cells.
    func cellSums(_ confidence: UnsafePointer<Float>) -> [Float] {
        let w = width, h = height, b = bin, bw = binsWide, bh = binsHigh
        var sums = [Float](repeating: 0, count: bw * bh)
        sums.withUnsafeMutableBufferPointer { sb in
            let s = sb.baseAddress!
            parallelChunks(bh) { binRows in
                for by in binRows {
                    for y in (by * b)..<min((by + 1) * b, h) {
                        for x in 0..<w { s[by &* bw &+ x / b] += confidence[y &* w &+ x] }
                    }
                }
            }
        }
        var cells = [Float](repeating: 0, count: grid.count)
        for by in 0..<bh {
            for bx in 0..<bw {
                cells[min(by * b / samplesPerCell, grid.height - 1) * grid.width + min(bx * b / samplesPerCell, grid.width - 1)] += sums[by * bw + bx]
            }
        }
        return cells
    }

    /// The samples summed by bin, each bin with its four nodes: everything the fit needs of the
    /// samples, whatever the membrane's strength.
    struct Bins {
        /// Per bin: Σ w m_c and Σ w b_c for the three channels, Σ w, Σ w x, Σ w y.
        var sums: [Float]
        var corners: [Int]
        var cornerWeights: [Double]
        static let perBin = 9
    }

    /// `mapped` and `reference` are 3 planes of `width` × `height`; `weight` one; `usable` 3
    /// planes of 1 or 0, whether a sample's channel says anything (`FrameAppearance.unclipped`).
    func binned(mapped: UnsafePointer<Float>, reference: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                usable: UnsafePointer<Float>) -> Bins {
        let w = width, h = height, n = w * h, b = bin, bw = binsWide, bh = binsHigh, bins = bw * bh
        let perBin = Bins.perBin
        var sums = [Float](repeating: 0, count: perBin * bins)
        sums.withUnsafeMutableBufferPointer { sb in
            let s = sb.baseAddress!
            parallelChunks(bh) { binRows in
                for by in binRows {
                    for y in (by * b)..<min((by + 1) * b, h) {
                        for x in 0..<w {
                            let i = y &* w &+ x, k = perBin &* (by &* bw &+ x / b)
                            let wi = weight[i]
                            guard wi > 0 else { continue }
                            for c in 0..<3 {
                                // Kept positive, so that the equations stay definite: a
                                // sample mapped below black says nothing about a gain.
                                let wc = wi * usable[c &* n &+ i]
                                s[k &+ c] += wc * max(mapped[c &* n &+ i], 0)
                                s[k &+ 3 &+ c] += wc * reference[c &* n &+ i]
                            }
                            s[k &+ 6] += wi
                            s[k &+ 7] += wi * Float(x - (x / b) * b)
                            s[k &+ 8] += wi * Float(y - by * b)
                        }
                    }
                }
            }
        }
        let gw = grid.width, spacing = Float(samplesPerCell)
        // Each bin's 4 nodes around its weighted centre, with their bilinear weights: the grid's
        // own `corners`, which read a field as `FrameAppearance.gainAtSamples` does.
        var corners = [Int](repeating: 0, count: 4 * bins), cornerWeights = [Double](repeating: 0, count: 4 * bins)
        let toLatent = { (sample: Float) -> Float in
            (sample / spacing - 0.5) * Float(AppearanceGrid.cell) + Float(AppearanceGrid.cell - 1) / 2
        }
        for by in 0..<bh {
            for bx in 0..<bw {
                let k = by * bw + bx, s = perBin * k
                guard sums[s + 6] > 0 else { continue }
                let cx = Float(bx * b) + sums[s + 7] / sums[s + 6] + 0.5, cy = Float(by * b) + sums[s + 8] / sums[s + 6] + 0.5
                for (i, corner) in grid.corners(latentX: toLatent(cx), latentY: toLatent(cy)).enumerated() {
                    corners[4 * k + i] = node(corner.cell % gw, corner.cell / gw)
                    cornerWeights[4 * k + i] = Double(corner.weight)
                }
            }
        }
        return Bins(sums: sums, corners: corners, cornerWeights: cornerWeights)
    }

    /// The field (3 × grid) that `bins` call for under a membrane of strength `membrane`
    /// (relative to the mean weight of a node's data; `FrameAppearance.membraneLadder`).
    func solve(_ bins: Bins, membrane: Double) -> PlanarImage {
        let gw = grid.width, gh = grid.height, nodes = grid.count, perBin = Bins.perBin
        let sums = bins.sums, corners = bins.corners, cornerWeights = bins.cornerWeights
        let count = sums.count / perBin
        var gain = [Float](repeating: 1, count: 3 * nodes)
        gain.withUnsafeMutableBufferPointer { gb in
            let gain = gb.baseAddress!
            DispatchQueue.concurrentPerform(iterations: 3) { c in
                var a = SymmetricBandMatrix(size: nodes, bandwidth: bandwidth)
                var y = [Double](repeating: 0, count: nodes)
                for k in 0..<count {
                    let m = Double(sums[perBin * k + c]), r = Double(sums[perBin * k + 3 + c])
                    guard m > 0 else { continue }
                    // The outer product of the corner weights, times m. (Corners clamped at the
                    // grid's edge coincide; their pairs then land on the diagonal, as they should.)
                    for i in 0..<4 {
                        let p = corners[4 * k + i], wp = cornerWeights[4 * k + i]
                        y[p] += wp * r
                        a.addToDiagonal(wp * wp * m, p)
                        for j in (i + 1)..<4 { a.addSymmetricPair(wp * cornerWeights[4 * k + j] * m, p, corners[4 * k + j]) }
                    }
                }
                let trace = (0..<nodes).reduce(0.0) { $0 + a.diagonal($1) }
                guard trace > 0 else { return }
                // The membrane between grid neighbours, and a faint pull to 1 so that the system is
                // definite even where a region has no data at all.
                let lambda = membrane * trace / Double(nodes), ridge = 1e-6 * trace / Double(nodes)
                for gy in 0..<gh {
                    for gx in 0..<gw {
                        let k = node(gx, gy)
                        a.addToDiagonal(ridge, k)
                        y[k] += ridge
                        if gx + 1 < gw { a.addMembrane(lambda, k, node(gx + 1, gy)) }
                        if gy + 1 < gh { a.addMembrane(lambda, k, node(gx, gy + 1)) }
                    }
                }
                guard let solution = a.solve(y) else { return }
                for gy in 0..<gh {
                    for gx in 0..<gw where solution[node(gx, gy)].isFinite {
                        gain[c * nodes + gy * gw + gx] = Float(min(max(solution[node(gx, gy)], 0.2), 5))
                    }
                }
            }
        }
        return PlanarImage(channels: 3, height: gh, width: gw, values: gain)
    }
}

private extension SymmetricBandMatrix {
    /// λ (x_k − x_l)²: neighbouring nodes pulled alike.
    mutating func addMembrane(_ lambda: Double, _ k: Int, _ l: Int) {
        addToDiagonal(lambda, k)
        addToDiagonal(lambda, l)
        addSymmetricPair(-lambda, k, l)
    }
}
