"""Glow flow steps inside your own TFP model (the README's example)."""
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import glow_tf.bijectors as gb
from glow_tf.optim import GlowOptimizer

tfd, tfb = tfp.distributions, tfp.bijectors

# A two-step flow on 8x8x1 images: squeeze to 4x4x4, then two Glow steps.
steps = [gb.FlowStep(4, hidden_channels=16, flow_permutation="invconv",
                     flow_coupling="affine", seed=k) for k in range(2)]
flow = tfb.Chain([gb.Squeeze(2)] + steps)          # forward: latent -> image
base = tfd.Sample(tfd.Normal(0., 1.), [4, 4, 4])     # any base over the latent
model = tfd.TransformedDistribution(base, flow)

images = np.random.RandomState(0).uniform(-.5, .5, [16, 8, 8, 1]).astype("float32")
z = gb.Squeeze(2).inverse(images)
for step in steps:                                   # data-dependent init
  z = step.initialize(z)

# glow_tf's optimiser (Adam, its slots stacked by shape): build its slots
# before the first step, so that a tf.function step is traced once.
optimizer = GlowOptimizer("adam", 1e-3, polyak=False)
optimizer.build(model.trainable_variables)
for _ in range(3):
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(model.log_prob(images))
  grads = tape.gradient(loss, model.trainable_variables)
  optimizer.apply_gradients(zip(grads, model.trainable_variables))
print("nats/image:", float(loss), "samples:", model.sample(2).shape)
