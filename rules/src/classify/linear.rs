//! A multinomial logistic regression (softmax) over the classifier's sparse features, trained
//! at pack load with AdaGrad and an L2 penalty. Small and deterministic on purpose: the order
//! the examples are visited in comes from a fixed-seed generator, so the same pack gives the
//! same weights — and the same answers — on every machine and every load.

use super::SparseVec;

/// How the model is trained.
#[derive(Debug, Clone, Copy)]
pub(super) struct Options {
    pub epochs: usize,
    /// AdaGrad's step size.
    pub rate: f32,
    /// L2 penalty on the weights (not on the biases).
    pub l2: f32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            epochs: 40,
            rate: 0.4,
            l2: 2e-5,
        }
    }
}

/// Weights: `w[feature * classes + class]`, so one feature's weights sit together.
#[derive(Debug, Clone, Default)]
pub(super) struct Linear {
    classes: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

/// A fixed-seed xorshift generator: the training order, the same everywhere.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

impl Linear {
    /// Trains on `(features, class, weight)` documents; `features` ids are below `n_features`.
    pub fn train(
        docs: &[(&SparseVec, usize, f32)],
        n_features: usize,
        classes: usize,
        opt: Options,
    ) -> Linear {
        let mut m = Linear {
            classes,
            w: vec![0.0; n_features * classes],
            b: vec![0.0; classes],
        };
        if classes < 2 || docs.is_empty() {
            return m;
        }
        let mut g2 = vec![1e-6f32; n_features * classes];
        let mut gb2 = vec![1e-6f32; classes];
        let mut order: Vec<usize> = (0..docs.len()).collect();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut p = vec![0.0f32; classes];
        for _ in 0..opt.epochs {
            for i in (1..order.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            for &d in &order {
                let (x, y, weight) = docs[d];
                m.probs_into(x, &mut p);
                for (c, pc) in p.iter().enumerate() {
                    let g = weight * (pc - if c == y { 1.0 } else { 0.0 });
                    for (id, xi) in x.ids.iter().zip(&x.w) {
                        let k = *id as usize * classes + c;
                        let grad = g * xi + opt.l2 * m.w[k];
                        g2[k] += grad * grad;
                        m.w[k] -= opt.rate * grad / g2[k].sqrt();
                    }
                    gb2[c] += g * g;
                    m.b[c] -= opt.rate * g / gb2[c].sqrt();
                }
            }
        }
        m
    }

    /// The probability of each class for `x`, into `p` (length: the number of classes).
    pub fn probs_into(&self, x: &SparseVec, p: &mut [f32]) {
        p.copy_from_slice(&self.b);
        for (id, xi) in x.ids.iter().zip(&x.w) {
            let row = &self.w[*id as usize * self.classes..(*id as usize + 1) * self.classes];
            for (pc, wc) in p.iter_mut().zip(row) {
                *pc += wc * xi;
            }
        }
        softmax(p);
    }
}

/// In place, numerically stable.
pub(super) fn softmax(p: &mut [f32]) {
    let max = p.iter().copied().fold(f32::MIN, f32::max);
    let mut sum = 0.0;
    for v in p.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        for v in p.iter_mut() {
            *v /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ids: &[u32]) -> SparseVec {
        let w = 1.0 / (ids.len() as f32).sqrt();
        SparseVec {
            ids: ids.to_vec(),
            w: vec![w; ids.len()],
        }
    }

    #[test]
    fn learns_separable_classes_and_is_deterministic() {
        let a = [v(&[0, 1]), v(&[0, 2]), v(&[1, 2])];
        let b = [v(&[3, 4]), v(&[4, 5]), v(&[3, 5])];
        let docs: Vec<(&SparseVec, usize, f32)> = a
            .iter()
            .map(|x| (x, 0, 1.0))
            .chain(b.iter().map(|x| (x, 1, 1.0)))
            .collect();
        let m = Linear::train(&docs, 6, 2, Options::default());
        let mut p = [0.0; 2];
        m.probs_into(&v(&[0, 5, 1]), &mut p);
        assert!(p[0] > 0.6, "{p:?}");
        m.probs_into(&v(&[4]), &mut p);
        assert!(p[1] > 0.6, "{p:?}");
        let again = Linear::train(&docs, 6, 2, Options::default());
        assert_eq!(m.w, again.w);
    }
}
