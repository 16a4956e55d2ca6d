#!/bin/bash
# Cross-check through the individual CLI commands: state_union (pretrain) -> 400 SST-2 labels.
set -e
# usage: examples/label_efficiency_cli.sh [WORK_DIR]   (env: BUDGET=300 seconds of pretraining, THREADS=1,
#   CORPUS=state_union | sst2-text: the text of the 6,920 SST-2 training sentences without their labels)
D="${DATA:-$(cd "$(dirname "$0")/../../shared/data" && pwd)}"  # ../shared/data from the project root
mkdir -p "${1:-runs/cli_check}" && cd "${1:-runs/cli_check}"
export OMP_NUM_THREADS=${THREADS:-1}
LM="${PYTHON:-python} -m lmforge"
rm -rf tok shards pre ft ft0 sst400.txt corpus
if [ "${CORPUS:-state_union}" = sst2-text ]; then
  mkdir corpus && cut -d' ' -f2- $D/classification/sst2.train.txt > corpus/sst2_train_text.txt && C=corpus
else
  C=$D/pretrain/state_union/
fi
head -n 6920 $D/classification/sst2.train.txt | ${PYTHON:-python} -c "
import random,sys
lines=sys.stdin.read().splitlines(); random.Random(0).shuffle(lines)
pos=[l for l in lines if l.startswith('1 ')][:200]; neg=[l for l in lines if l.startswith('0 ')][:200]
open('sst400.txt','w').write('\n'.join(pos+neg)+'\n')"
/usr/bin/time -f "%e s tokenizer" $LM tokenizer train --errors replace --kind wordpiece --vocab-size 4000 --out tok $C
/usr/bin/time -f "%e s prepare" $LM prepare --errors replace --tokenizer tok --out shards $C
/usr/bin/time -f "%e s pretrain" $LM pretrain --preset tiny-bert --vocab-from-data --data shards --out pre --time-budget ${BUDGET:-300} --quiet --no-codecarbon
for arm in "ft" "ft0 --from-scratch"; do
  set -- $arm
  /usr/bin/time -f "%e s finetune $1" $LM finetune --from pre/final $2 --task classify --train sst400.txt --valid $D/classification/sst2.dev.txt --out $1 --quiet --no-codecarbon
  $LM evaluate --model $1/model --data $D/classification/sst2.test.txt | tail -n 3
done
