//! Anomaly maps and image scores from fused feature groups, batched, on the
//! groups' device.
//!
//! Two post-processings, chosen by [`PostProcess`]:
//!
//! - [`PostProcess::official`] is the official evaluation (`cal_anomaly_maps`
//!   and `evaluation_batch` in utils.py, docs/sources.md): per group
//!   1 - cosine over channels, bilinear upsample with align_corners=true to
//!   the crop, mean of the groups, bilinear resize (align_corners=false, no
//!   antialias) to the map size, 5x5 Gaussian with sigma 4 and zero padding;
//!   the image score is the mean of the top `int(H*W*max_ratio)` smoothed
//!   pixels (the max when `max_ratio` is 0). The smoothed map is the output.
//! - [`PostProcess::anomalib`] is anomalib 2.7's `DinomalyModel.forward`: the
//!   same steps, but the Gaussian pads by reflection and the map returned is
//!   the raw mean map at the crop size (no resize, no blur); only the score
//!   goes through resize and blur.
//!
//! The official code upsamples to `img.shape[-1]` in both directions (square
//! crops only); here the crop is `(height, width)`, which is what anomalib
//! does for non-square inputs.

use tch::{Device, Kind, Tensor};

use super::smoothing::{check_kernel, gaussian_kernel, smooth, Padding};
use crate::{Error, Result};

/// Epsilon of `torch.cosine_similarity` (its default, used by both
/// references): each feature vector's norm is clamped to at least this.
pub const COSINE_EPS: f64 = 1e-8;

/// How fused groups become maps and scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PostProcess {
    /// (height, width) of the image crop the encoder saw; the per-group maps
    /// are upsampled to it.
    pub crop: (i64, i64),
    /// (height, width) of the smoothed map the score is taken from.
    pub map_size: (i64, i64),
    /// Standard deviation of the Gaussian, in map pixels.
    pub sigma: f64,
    /// Side of the square Gaussian kernel (odd).
    pub kernel_size: i64,
    /// Border handling of the Gaussian convolution.
    pub padding: Padding,
    /// Fraction of the smoothed map's pixels whose mean is the image score;
    /// 0 means the maximum.
    pub max_ratio: f64,
    /// Output the unsmoothed mean map at the crop size instead of the
    /// smoothed map at the map size (anomalib's `anomaly_map`).
    pub raw_map: bool,
}

impl PostProcess {
    /// The official evaluation at the default 392 crop: map 256x256, 5x5
    /// Gaussian with sigma 4 and zero padding, top 1 % mean.
    pub fn official() -> Self {
        PostProcess {
            crop: (392, 392),
            map_size: (256, 256),
            sigma: 4.0,
            kernel_size: 5,
            padding: Padding::Zero,
            max_ratio: 0.01,
            raw_map: false,
        }
    }

    /// anomalib 2.7's Dinomaly at a 392 crop: raw mean map at the crop size
    /// as the map; score from the map resized to 256x256, blurred (5x5,
    /// sigma 4, reflect padding), top 1 % mean.
    pub fn anomalib() -> Self {
        PostProcess { padding: Padding::Reflect, raw_map: true, ..PostProcess::official() }
    }

    /// The same settings for another crop.
    pub fn with_crop(self, crop: (i64, i64)) -> Self {
        PostProcess { crop, ..self }
    }

    /// The same settings for another map size.
    pub fn with_map_size(self, map_size: (i64, i64)) -> Self {
        PostProcess { map_size, ..self }
    }

    /// (height, width) of the maps [`PostProcessor::apply`] returns.
    pub fn output_size(&self) -> (i64, i64) {
        if self.raw_map {
            self.crop
        } else {
            self.map_size
        }
    }

    /// How many pixels the image score averages: `int(H * W * max_ratio)`
    /// computed in float64 as Python does (so 256x256 at 0.01 gives 655), or
    /// 1 (the maximum) when `max_ratio` is 0.
    pub fn top_count(&self) -> Result<i64> {
        top_count(self.map_size.0 * self.map_size.1, self.max_ratio)
    }

    /// Checks every setting; the error names the one that cannot work.
    pub fn validate(&self) -> Result<()> {
        for (name, (h, w)) in [("crop", self.crop), ("map size", self.map_size)] {
            if h < 1 || w < 1 {
                return Err(Error::config(format!("{name} must be at least 1x1, got {h}x{w}")));
            }
        }
        check_kernel(self.kernel_size, self.sigma)?;
        let pad = self.kernel_size / 2;
        let (h, w) = self.map_size;
        if self.padding == Padding::Reflect && (h <= pad || w <= pad) {
            return Err(Error::config(format!(
                "reflect padding of {pad} needs a map size above {pad}x{pad}, got {h}x{w}"
            )));
        }
        self.top_count()?;
        Ok(())
    }
}

/// Maps and scores of one batch, on the groups' device.
#[derive(Debug)]
pub struct ScoredBatch {
    /// (B, H, W) float32: smoothed maps at the map size, or raw mean maps at
    /// the crop size when `raw_map` is set.
    pub maps: Tensor,
    /// (B) float32 image scores.
    pub scores: Tensor,
}

/// A validated [`PostProcess`] with its Gaussian kernel already on the
/// device, so a batch costs no host-to-device copy.
#[derive(Debug)]
pub struct PostProcessor {
    config: PostProcess,
    kernel: Tensor,
    device: Device,
}

impl PostProcessor {
    /// Validates `config` and puts its kernel on `device`.
    /// The device the kernel lives on.
    pub fn device(&self) -> Device {
        self.device
    }

    pub fn new(config: PostProcess, device: Device) -> Result<Self> {
        config.validate()?;
        let kernel = gaussian_kernel(config.kernel_size, config.sigma)?.f_to_device(device)?;
        Ok(PostProcessor { config, kernel, device })
    }

    /// The settings.
    pub fn config(&self) -> &PostProcess {
        &self.config
    }

    /// Maps and scores for one batch. `encoder[g]` and `decoder[g]` are the
    /// g-th fused groups, each (B, C, h, w) on this processor's device, in
    /// any floating kind (they are compared in float32, as the references
    /// do at full precision).
    pub fn apply(&self, encoder: &[Tensor], decoder: &[Tensor]) -> Result<ScoredBatch> {
        check_groups(encoder, decoder)?;
        let device = encoder[0].device();
        if device != self.device {
            return Err(Error::mismatch(
                "fused groups",
                format!("they are on {device:?} but the post-processing was set up on {:?}", self.device),
            ));
        }
        let fused = fused_map(encoder, decoder, self.config.crop)?;
        let resized = resize_map(&fused, self.config.map_size)?;
        let smoothed = smooth(&resized, &self.kernel, self.config.padding)?;
        let scores = top_ratio_mean(&smoothed, self.config.max_ratio)?;
        let maps = if self.config.raw_map { fused } else { smoothed };
        Ok(ScoredBatch { maps: maps.f_squeeze_dim(1)?, scores })
    }
}

/// Checks that the groups pair up: same count (at least one), each pair the
/// same (B, C, h, w), all groups the same batch and grid, floating kind,
/// one device.
fn check_groups(encoder: &[Tensor], decoder: &[Tensor]) -> Result<()> {
    let what = "fused groups";
    if encoder.is_empty() || encoder.len() != decoder.len() {
        return Err(Error::mismatch(
            what,
            format!(
                "{} encoder and {} decoder groups; expected the same number, at least one",
                encoder.len(),
                decoder.len()
            ),
        ));
    }
    let first = encoder[0].size();
    for (g, (e, d)) in encoder.iter().zip(decoder).enumerate() {
        let (es, ds) = (e.size(), d.size());
        if es.len() != 4 || es.iter().any(|&n| n < 1) {
            return Err(Error::mismatch(what, format!("encoder group {g} has shape {es:?}, expected (B, C, h, w)")));
        }
        if ds != es {
            return Err(Error::mismatch(
                what,
                format!("decoder group {g} has shape {ds:?} but encoder group {g} has {es:?}"),
            ));
        }
        if es[0] != first[0] || es[2..] != first[2..] {
            return Err(Error::mismatch(
                what,
                format!("group {g} has shape {es:?} but group 0 has {first:?}; batch and grid must agree"),
            ));
        }
        if !e.is_floating_point() || !d.is_floating_point() {
            return Err(Error::mismatch(
                what,
                format!("group {g} is {:?}/{:?}, expected floating point", e.kind(), d.kind()),
            ));
        }
        if e.device() != encoder[0].device() || d.device() != encoder[0].device() {
            return Err(Error::mismatch(what, format!("group {g} is on another device")));
        }
    }
    Ok(())
}

/// 1 - cosine similarity over channels of one group pair: (B, C, h, w) twice
/// to (B, 1, h, w) float32. Norms are clamped to [`COSINE_EPS`] as
/// `torch.cosine_similarity` does, so all-zero features give distance 1.
pub fn group_distance(encoder: &Tensor, decoder: &Tensor) -> Result<Tensor> {
    let e = encoder.f_to_kind(Kind::Float)?;
    let d = decoder.f_to_kind(Kind::Float)?;
    let cosine = Tensor::f_cosine_similarity(&e, &d, 1, COSINE_EPS)?;
    Ok(cosine.f_rsub_scalar(1.0)?.f_unsqueeze(1)?)
}

/// The mean over groups of the per-group distances, each upsampled
/// bilinearly with align_corners=true to `crop`: (B, 1, crop.0, crop.1).
/// Concatenated along channels and averaged, in the references' order.
pub fn fused_map(encoder: &[Tensor], decoder: &[Tensor], crop: (i64, i64)) -> Result<Tensor> {
    check_groups(encoder, decoder)?;
    let upsampled = encoder
        .iter()
        .zip(decoder)
        .map(|(e, d)| {
            // Bilinear, align_corners = true, sizes given (no scale factors).
            Ok(group_distance(e, d)?.f_upsample_bilinear2d([crop.0, crop.1], true, None, None)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::f_cat(&upsampled, 1)?.f_mean_dim(1, true, Kind::Float)?)
}

/// Resizes (B, 1, H, W) maps to `size`: bilinear, align_corners=false, no
/// antialias (`F.interpolate(size=...)` with its defaults).
pub fn resize_map(maps: &Tensor, size: (i64, i64)) -> Result<Tensor> {
    Ok(maps.f_upsample_bilinear2d([size.0, size.1], false, None, None)?)
}

/// `int(pixels * max_ratio)` as Python computes it (float64 product,
/// truncated), or 1 for `max_ratio` 0 (the maximum). Refuses ratios outside
/// [0, 1] and ratios that select no pixel.
pub fn top_count(pixels: i64, max_ratio: f64) -> Result<i64> {
    if !(0.0..=1.0).contains(&max_ratio) {
        return Err(Error::config(format!("max ratio must be between 0 and 1, got {max_ratio}")));
    }
    if max_ratio == 0.0 {
        return Ok(1);
    }
    let k = (pixels as f64 * max_ratio) as i64;
    if k < 1 {
        return Err(Error::config(format!(
            "max ratio {max_ratio} of {pixels} pixels selects none; use a larger ratio or map, or 0 for the maximum"
        )));
    }
    Ok(k)
}

/// Image scores of (B, ...) maps: the mean of each map's `top_count` largest
/// values, or its maximum when `max_ratio` is 0. Ties do not matter: the
/// selected values are the same whichever of the equal pixels is taken.
pub fn top_ratio_mean(maps: &Tensor, max_ratio: f64) -> Result<Tensor> {
    let flat = maps.f_flatten(1, -1)?;
    let pixels = flat.size()[1];
    let k = top_count(pixels, max_ratio)?;
    if max_ratio == 0.0 {
        return Ok(flat.f_amax([1], false)?);
    }
    // Sorted descending like the references' torch.sort(...)[:, :k], so the
    // mean adds the same values in the same order.
    let (top, _) = flat.f_topk(k, 1, true, true)?;
    Ok(top.f_mean_dim(1, false, Kind::Float)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> (Kind, Device) {
        (Kind::Float, Device::Cpu)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn top_count_follows_python_int_truncation() {
        assert_eq!(top_count(256 * 256, 0.01).unwrap(), 655);
        assert_eq!(top_count(64 * 64, 0.01).unwrap(), 40);
        assert_eq!(top_count(10, 0.0).unwrap(), 1);
        assert_eq!(top_count(10, 1.0).unwrap(), 10);
        assert!(top_count(50, 0.01).is_err(), "0.5 pixel truncates to none");
        assert!(top_count(100, -0.1).is_err());
        assert!(top_count(100, 1.5).is_err());
        assert!(top_count(100, f64::NAN).is_err());
    }

    #[test]
    fn top_mean_with_ties_and_plain_max() {
        // 10 pixels: three tied at 5, then 4, ..., k = int(10 * 0.3) = 3.
        let map = Tensor::from_slice(&[1f32, 5., 2., 5., 0., 4., 5., 3., 1., 2.]).view([1, 1, 2, 5]);
        let s = values(&top_ratio_mean(&map, 0.3).unwrap());
        assert_eq!(s, vec![5.0]);
        // k = 4 takes the three tied values and the 4.
        let s = values(&top_ratio_mean(&map, 0.4).unwrap());
        assert!((s[0] - 4.75).abs() < 1e-7);
        let s = values(&top_ratio_mean(&map, 0.0).unwrap());
        assert_eq!(s, vec![5.0]);
        // All pixels tied.
        let flat = Tensor::full([2, 1, 16, 16], 0.25, cpu());
        assert_eq!(values(&top_ratio_mean(&flat, 0.01).unwrap()), vec![0.25, 0.25]);
    }

    #[test]
    fn identical_features_give_zero_and_opposite_give_two() {
        let e = Tensor::randn([2, 8, 3, 4], cpu());
        let d = group_distance(&e, &e).unwrap();
        assert_eq!(d.size(), vec![2, 1, 3, 4]);
        assert!(values(&d).iter().all(|v| v.abs() < 1e-6));
        let d = group_distance(&e, &e.neg()).unwrap();
        assert!(values(&d).iter().all(|v| (v - 2.0).abs() < 1e-6));
        // Zero vectors: norms clamped to eps, cosine 0, distance 1 (no NaN).
        let z = Tensor::zeros([1, 8, 2, 2], cpu());
        assert!(values(&group_distance(&z, &z).unwrap()).iter().all(|v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn presets_and_output_sizes() {
        let o = PostProcess::official();
        assert_eq!(o.top_count().unwrap(), 655);
        assert_eq!(o.output_size(), (256, 256));
        let a = PostProcess::anomalib().with_crop((168, 280));
        assert_eq!(a.padding, Padding::Reflect);
        assert_eq!(a.output_size(), (168, 280));
        assert_eq!(a.map_size, (256, 256));
    }

    #[test]
    fn bad_settings_are_refused() {
        let o = PostProcess::official();
        assert!(o.with_crop((0, 392)).validate().is_err());
        assert!(o.with_map_size((256, -1)).validate().is_err());
        assert!(PostProcess { kernel_size: 4, ..o }.validate().is_err());
        assert!(PostProcess { sigma: -1.0, ..o }.validate().is_err());
        assert!(PostProcess { max_ratio: 2.0, ..o }.validate().is_err());
        assert!(o.with_map_size((8, 8)).validate().is_err(), "int(64*0.01) = 0 pixels");
        assert!(PostProcess { max_ratio: 0.0, ..o }.with_map_size((8, 8)).validate().is_ok());
        assert!(PostProcess::anomalib().with_map_size((2, 64)).validate().is_err());
        assert!(PostProcessor::new(o.with_crop((0, 0)), Device::Cpu).is_err());
    }

    #[test]
    fn mismatched_groups_are_refused() {
        let p = PostProcessor::new(PostProcess::official().with_crop((28, 28)), Device::Cpu).unwrap();
        let a = Tensor::randn([2, 4, 2, 2], cpu());
        let b = Tensor::randn([2, 4, 2, 3], cpu());
        let c = Tensor::randn([3, 4, 2, 2], cpu());
        let err = |e: &[Tensor], d: &[Tensor]| p.apply(e, d).unwrap_err().to_string();
        assert!(err(&[], &[]).contains("at least one"));
        assert!(err(&[a.copy()], &[]).contains("1 encoder and 0 decoder"));
        assert!(err(&[a.copy()], &[b.copy()]).contains("decoder group 0 has shape [2, 4, 2, 3]"));
        assert!(err(&[a.copy(), c.copy()], &[a.copy(), c.copy()]).contains("group 1"));
        let three = Tensor::randn([2, 4, 2], cpu());
        assert!(err(&[three.copy()], &[three.copy()]).contains("expected (B, C, h, w)"));
        let ints = Tensor::zeros([2, 4, 2, 2], (Kind::Int64, Device::Cpu));
        assert!(err(&[ints.copy()], &[ints.copy()]).contains("floating point"));
    }

    #[test]
    fn batch_equals_single_images_and_shapes_follow_the_config() {
        let enc: Vec<Tensor> = (0..2).map(|_| Tensor::randn([3, 16, 4, 6], cpu())).collect();
        let dec: Vec<Tensor> = enc.iter().map(|e| e * 0.8 + Tensor::randn_like(e) * 0.5).collect();
        for config in [
            PostProcess::official().with_crop((56, 84)).with_map_size((32, 48)),
            PostProcess::anomalib().with_crop((56, 84)).with_map_size((32, 48)),
        ] {
            let p = PostProcessor::new(config, Device::Cpu).unwrap();
            let batch = p.apply(&enc, &dec).unwrap();
            let (h, w) = config.output_size();
            assert_eq!(batch.maps.size(), vec![3, h, w]);
            assert_eq!(batch.maps.kind(), Kind::Float);
            assert_eq!(batch.scores.size(), vec![3]);
            for i in 0..3 {
                let one = |g: &[Tensor]| g.iter().map(|t| t.narrow(0, i, 1)).collect::<Vec<_>>();
                let single = p.apply(&one(&enc), &one(&dec)).unwrap();
                let dm = (single.maps.get(0) - batch.maps.get(i)).abs().max().double_value(&[]);
                let ds = (single.scores.get(0) - batch.scores.get(i)).abs().double_value(&[]);
                assert!(dm <= 1e-7 && ds <= 1e-7, "image {i}: map {dm}, score {ds}");
            }
        }
    }
}
