package main

// Temporary stand-in for the shared loader that "serve" lands in load.go;
// deleted once it is on main.

import (
	"errors"

	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/tokenizer"
)

func loadBaseStandIn(dir string, int8 bool) (*model.Model, *tokenizer.Tokenizer, error) {
	if int8 {
		return nil, nil, errors.New("finetune: -int8 is not wired yet")
	}
	m, err := model.LoadPretrained(dir)
	if err != nil {
		return nil, nil, err
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return nil, nil, err
	}
	return m, tok, nil
}
